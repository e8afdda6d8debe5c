"""Mask annealing (EOMT.md §1): masked attention is phased out block by block during training."""
from typing import List, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmeomt.registry import HOOKS


def annealed_prob(it: int, start: int, end: int, power: float = 0.9) -> float:
    """``p(it)``: 1 before ``start``, 0 from ``end`` on, ``(1 - (it - start)/(end - start))^power``
    in between (so exactly 1 at ``it == start``), as in the authors' ``mask_annealing``."""
    if it < start:
        return 1.0
    if it >= end:
        return 0.0
    return (1.0 - (it - start) / (end - start))**power


@HOOKS.register_module()
class MaskAnnealingHook(Hook):
    """Sets ``attn_mask_probs`` of every :class:`~mmeomt.models.EoMT` core before each training
    iteration, from ``runner.iter``.

    Block ``k`` of the last ``num_blocks`` (0 = the first block that sees the queries) applies its
    attention mask to each query with probability ``p_k(it)`` (:func:`annealed_prob`), so the
    masks disappear from the earlier blocks first and the final model runs without any.

    The authors update the probabilities at the end of batch ``it - 1`` with the already
    incremented step ``it``; setting them before iteration ``it`` from ``runner.iter = it`` gives
    every iteration the same value.  Nothing is kept in the hook: a resumed run (whose
    ``runner.iter`` comes from the checkpoint) gets the probabilities its iteration implies.

    The values are logged as ``attn_mask_prob_{k}`` (message-hub scalars under ``train/``, so they
    appear in the log line and in the visualiser's scalars).

    Args:
        start_iters: ``start_k`` per block, ``len == num_blocks``.
        end_iters: ``end_k`` per block, ``start_k < end_k``.
        power: exponent of the polynomial decay (the authors reuse the lr's poly power, 0.9).
    """

    priority = 'NORMAL'

    def __init__(self, start_iters: Sequence[int], end_iters: Sequence[int], power: float = 0.9):
        for name, value in (('start_iters', start_iters), ('end_iters', end_iters)):
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
                raise TypeError(f'MaskAnnealingHook: {name} must be a list of non-negative ints '
                                f'(one per masked block), got {value!r}; in a config set '
                                f'default_hooks.mask_annealing.{name}')
        if len(start_iters) != len(end_iters):
            raise ValueError(f'MaskAnnealingHook: start_iters ({len(start_iters)} values) and '
                             f'end_iters ({len(end_iters)} values) must have the same length, '
                             'one value per masked block (num_blocks)')
        bad = [k for k, (s, e) in enumerate(zip(start_iters, end_iters)) if not s < e]
        if bad:
            raise ValueError(f'MaskAnnealingHook: start_iters[k] < end_iters[k] must hold, fails '
                             f'for block(s) {bad}: start_iters={list(start_iters)}, '
                             f'end_iters={list(end_iters)}')
        if not power > 0:
            raise ValueError(f'MaskAnnealingHook: power must be > 0, got {power}')
        self.start_iters = list(start_iters)
        self.end_iters = list(end_iters)
        self.power = power
        self._found: list = []  # the EoMT cores of the model, set in before_train

    def probs(self, it: int) -> List[float]:
        """``[p_0(it), ..., p_{L2-1}(it)]``."""
        return [annealed_prob(it, s, e, self.power)
                for s, e in zip(self.start_iters, self.end_iters)]

    def _cores(self, runner) -> list:
        from mmeomt.models.eomt import EoMT
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        cores = [m for m in model.modules() if isinstance(m, EoMT)]
        if not cores:
            raise RuntimeError(f'MaskAnnealingHook: the model ({type(model).__name__}) has no '
                               'mmeomt EoMT module whose attn_mask_probs it could anneal')
        for core in cores:
            if core.num_blocks != len(self.start_iters):
                raise ValueError(
                    f'MaskAnnealingHook: got {len(self.start_iters)} start/end iterations but the '
                    f'model has num_blocks={core.num_blocks} masked blocks; give one value per '
                    'block (EOMT.md §1 lists them per model size)')
        return cores

    def _apply(self, runner, cores: list) -> None:
        probs = self.probs(runner.iter)
        for core in cores:
            # In place, so the buffer stays the registered one (DDP broadcasts it from rank 0;
            # every rank computes the same values anyway).
            with torch.no_grad():
                core.attn_mask_probs.copy_(
                    torch.tensor(probs, dtype=core.attn_mask_probs.dtype))
        for k, p in enumerate(probs):
            runner.message_hub.update_scalar(f'train/attn_mask_prob_{k}', p)

    def before_train(self, runner) -> None:
        # The cores are found (and checked) once per run, not by walking the model's modules
        # every iteration.
        self._found = self._cores(runner)
        # Also here, so that a validation or the first iteration after a resume sees the values
        # of the resumed iteration (the checkpoint's buffer holds those of the iteration before).
        self._apply(runner, self._found)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        # (_cores never returns an empty list: it raises.)
        self._apply(runner, self._found or self._cores(runner))
