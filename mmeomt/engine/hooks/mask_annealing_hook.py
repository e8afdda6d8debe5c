"""Mask annealing (docs/method.md §2): masked attention is phased out block by block during
training."""
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmeomt.registry import HOOKS
from ..schedule_fractions import check_fractions, check_iters, fraction_to_iter

FIELD = 'default_hooks.mask_annealing'


def annealed_prob(it: int, start: int, end: int, power: float = 0.9) -> float:
    """``p(it)``: 1 before ``start``, 0 from ``end`` on, ``(1 - (it - start)/(end - start))^power``
    in between (so exactly 1 at ``it == start``), as in the authors' ``mask_annealing``.  With
    ``start == end`` (a window shorter than one iteration) it drops from 1 to 0 at ``start``."""
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

    The windows ``[start_k, end_k)`` are given either as fractions of the run
    (``start_fractions`` / ``end_fractions``, floats in ``[0, 1]`` of ``train_cfg.max_iters``,
    what the published configs use) or as iterations (``start_iters`` / ``end_iters``, ints), never
    both.  Fractions are resolved in :meth:`before_train`, from ``runner.max_iters``, with
    :func:`~mmeomt.engine.schedule_fractions.fraction_to_iter` (round half up), so a shorter or
    longer run keeps the schedule's shape.

    The authors update the probabilities at the end of batch ``it - 1`` with the already
    incremented step ``it``; setting them before iteration ``it`` from ``runner.iter = it`` gives
    every iteration the same value.  Nothing is kept in the hook: a resumed run (whose
    ``runner.iter`` comes from the checkpoint) gets the probabilities its iteration implies.

    The values are logged as ``attn_mask_prob_{k}`` (message-hub scalars under ``train/``, so they
    appear in the log line and in the visualiser's scalars).

    Args:
        start_iters: ``start_k`` per block in iterations, ``len == num_blocks``.
        end_iters: ``end_k`` per block in iterations, ``start_k < end_k``.
        start_fractions: ``start_k`` per block as a fraction of ``max_iters``.
        end_fractions: ``end_k`` per block as a fraction of ``max_iters``, ``start_k < end_k``.
        power: exponent of the polynomial decay (the authors reuse the lr's poly power, 0.9).
    """

    priority = 'NORMAL'

    def __init__(self,
                 start_iters: Optional[Sequence[int]] = None,
                 end_iters: Optional[Sequence[int]] = None,
                 start_fractions: Optional[Sequence[float]] = None,
                 end_fractions: Optional[Sequence[float]] = None,
                 power: float = 0.9):
        given_iters = start_iters is not None or end_iters is not None
        given_fractions = start_fractions is not None or end_fractions is not None
        if given_iters == given_fractions:
            raise ValueError(
                f'MaskAnnealingHook: give the windows either as start_fractions/end_fractions '
                f'(of train_cfg.max_iters) or as start_iters/end_iters (iterations), not '
                f'{"both" if given_iters else "neither"}; in a config set {FIELD}.* (and the '
                'other pair to None when overriding a base config)')
        kind = 'iters' if given_iters else 'fractions'
        check = check_iters if given_iters else check_fractions
        starts = check(start_iters if given_iters else start_fractions,
                       f'MaskAnnealingHook: {FIELD}.start_{kind}')
        ends = check(end_iters if given_iters else end_fractions,
                     f'MaskAnnealingHook: {FIELD}.end_{kind}')
        if len(starts) != len(ends):
            raise ValueError(f'MaskAnnealingHook: start_{kind} ({len(starts)} values) and '
                             f'end_{kind} ({len(ends)} values) must have the same length, '
                             'one value per masked block (num_blocks)')
        bad = [k for k, (s, e) in enumerate(zip(starts, ends)) if not s < e]
        if bad:
            raise ValueError(f'MaskAnnealingHook: start_{kind}[k] < end_{kind}[k] must hold, '
                             f'fails for block(s) {bad}: start_{kind}={starts}, '
                             f'end_{kind}={ends}')
        if not power > 0:
            raise ValueError(f'MaskAnnealingHook: power must be > 0, got {power}')
        self.start_fractions = None if given_iters else starts
        self.end_fractions = None if given_iters else ends
        # The windows in iterations; for fractions, set in before_train (see resolve).
        self.start_iters: Optional[List[int]] = starts if given_iters else None
        self.end_iters: Optional[List[int]] = ends if given_iters else None
        self.num_windows = len(starts)
        self.power = power
        self._found: list = []  # the EoMT cores of the model, set in before_train

    def resolve(self, max_iters: int) -> Tuple[List[int], List[int]]:
        """The windows ``(start_iters, end_iters)`` of a run of ``max_iters`` iterations
        (those given, for windows given in iterations)."""
        if self.start_fractions is None:
            return list(self.start_iters), list(self.end_iters)
        return ([fraction_to_iter(f, max_iters) for f in self.start_fractions],
                [fraction_to_iter(f, max_iters) for f in self.end_fractions])

    def probs(self, it: int) -> List[float]:
        """``[p_0(it), ..., p_{L2-1}(it)]``."""
        if self.start_iters is None:
            raise RuntimeError('MaskAnnealingHook: the windows are fractions of the run, known '
                               'in iterations once before_train (or resolve) has run')
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
            if core.num_blocks != self.num_windows:
                raise ValueError(
                    f'MaskAnnealingHook: got {self.num_windows} annealing windows but the '
                    f'model has num_blocks={core.num_blocks} masked blocks; give one window '
                    f'per block in {FIELD} (docs/method.md §2 lists them per model size)')
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
        self.start_iters, self.end_iters = self.resolve(runner.max_iters)
        if max(self.end_iters) > runner.max_iters:
            # The model would be evaluated (and deployed) without masks it still relied on.
            runner.logger.warning(
                f'MaskAnnealingHook: the last window ends at iteration {max(self.end_iters)}, '
                f'after the run ({runner.max_iters} iterations): masked attention is not fully '
                f'annealed; give {FIELD} as start_fractions/end_fractions to follow max_iters')
        # Also here, so that a validation or the first iteration after a resume sees the values
        # of the resumed iteration (the checkpoint's buffer holds those of the iteration before).
        self._apply(runner, self._found)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        # (_cores never returns an empty list: it raises.)
        self._apply(runner, self._found or self._cores(runner))
