"""EoMT's two-stage warm-up + poly decay (docs/method.md §4)."""
from typing import List, Optional

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from mmeomt.registry import PARAM_SCHEDULERS
from ..schedule_fractions import fraction_to_iter, is_fraction, is_iters

# The authors' warm-ups, in iterations whatever the run's length (docs/method.md §4).
WARMUP_ITERS, VIT_WARMUP_ITERS = 500, 1000


def two_stage_warmup_poly(t: int, base_lr: float, vit: bool, total: int, warmup_iters: int,
                          vit_warmup_iters: int, power: float) -> float:
    """The lr of a group with initial lr ``base_lr`` during iteration ``t`` of ``total``.

    * non-ViT: linear warm-up ``base * t / w1`` for ``t < w1``, then
      ``base * (1 - (t - w1) / (T - w1)) ** power``;
    * ViT: 0 for ``t < w1``, ``base * (t - w1) / w2`` for ``t < w1 + w2``, then
      ``base * (1 - (t - w1 - w2) / (T - w1 - w2)) ** power``

    (``w1 = warmup_iters``, ``w2 = vit_warmup_iters``, ``T = total``; denominators are at
    least 1, as in the authors' ``TwoStageWarmupPolySchedule``.)
    """
    w1, w2 = warmup_iters, vit_warmup_iters
    if not vit:
        if w1 > 0 and t < w1:
            return base_lr * t / w1
        return base_lr * (1 - max(0, t - w1) / max(1, total - w1))**power
    if t < w1:
        return 0.0
    if t < w1 + w2:
        return base_lr * (t - w1) / w2
    return base_lr * (1 - max(0, t - w1 - w2) / max(1, total - w1 - w2))**power


@PARAM_SCHEDULERS.register_module()
class TwoStageWarmupPolyLR(LRSchedulerMixin, _ParamScheduler):
    """Per-iteration lr of each param group from its initial lr and its ``'vit'`` tag.

    Non-ViT groups (queries, heads, upscale) warm up linearly over ``warmup_iters``; ViT groups
    (tagged by :class:`~mmeomt.engine.EoMTOptimWrapperConstructor`) stay at 0 for those
    iterations, so the new, randomly initialised parts settle before the pretrained encoder
    moves, then warm up over ``vit_warmup_iters``; both then decay polynomially to 0 at ``end``
    (see :func:`two_stage_warmup_poly`, ``T = end - begin``).

    The value is computed in closed form from ``last_step`` (the iteration index relative to
    ``begin``), never from the current lr, so it is exact after a resume: mmengine's
    ``state_dict`` holds ``last_step``, and :meth:`load_state_dict` re-applies the lr of the
    restored step.  mmengine sets the value for step 0 when the scheduler is built and steps it
    after each iteration, so the lr used *during* iteration ``t`` is the formula at ``t``.

    Each warm-up is given in iterations (``warmup_iters``, ``vit_warmup_iters``: ints) or as a
    fraction of the schedule's ``end - begin`` (``warmup_fraction``, ``vit_warmup_fraction``:
    floats in ``[0, 1)``; with the default ``begin=0`` and ``end`` left to the Runner, a fraction
    of ``train_cfg.max_iters``), not both; neither gives the authors' 500 and 1000 iterations.
    The published configs keep the authors' absolute warm-ups; fractions suit short runs, whose
    warm-ups should shrink with them.  Fractions are resolved here, once ``end`` is known, with
    :func:`~mmeomt.engine.schedule_fractions.fraction_to_iter` (round half up).

    Args:
        optimizer: the optim wrapper (or optimizer); every group needs a boolean ``'vit'``.
        warmup_iters: ``w1`` in iterations (authors: 500).
        vit_warmup_iters: ``w2`` in iterations (authors: 1000).
        warmup_fraction: ``w1`` as a fraction of ``end - begin``.
        vit_warmup_fraction: ``w2`` as a fraction of ``end - begin``.
        power: poly exponent (0.9).
        begin, end: the iterations the schedule spans; a config may leave ``end`` out and the
            Runner fills in ``train_cfg.max_iters``.
        by_epoch: must be False; the schedule is per iteration.
        last_step, verbose: as mmengine's schedulers.
    """

    def __init__(self, optimizer, warmup_iters: Optional[int] = None,
                 vit_warmup_iters: Optional[int] = None,
                 warmup_fraction: Optional[float] = None,
                 vit_warmup_fraction: Optional[float] = None, power: float = 0.9,
                 begin: int = 0, end: int = INF, last_step: int = -1, by_epoch: bool = False,
                 verbose: bool = False):
        if by_epoch:
            raise ValueError('TwoStageWarmupPolyLR is defined per iteration; set by_epoch=False '
                             '(and begin/end in iterations)')
        if end >= INF:
            raise ValueError('TwoStageWarmupPolyLR needs a finite `end` (the total number of '
                             'iterations); leave it out of the config to get train_cfg.max_iters')
        warmup_iters = self._resolve('warmup', warmup_iters, warmup_fraction, WARMUP_ITERS,
                                     end - begin)
        vit_warmup_iters = self._resolve('vit_warmup', vit_warmup_iters, vit_warmup_fraction,
                                         VIT_WARMUP_ITERS, end - begin)
        if warmup_iters + vit_warmup_iters >= end - begin:
            raise ValueError(f'TwoStageWarmupPolyLR: warmup_iters + vit_warmup_iters '
                             f'({warmup_iters} + {vit_warmup_iters}) must be shorter than the '
                             f'schedule end - begin = {end - begin}')
        # An OptimWrapper with several groups also lists a `base_param_settings` pseudo-group
        # (what mmengine logs as base_lr); it follows the non-ViT curve.  The real groups must
        # all be tagged.
        groups = getattr(optimizer, 'optimizer', optimizer).param_groups
        untagged = [i for i, g in enumerate(groups) if not isinstance(g.get('vit'), bool)]
        if untagged:
            raise KeyError(f'TwoStageWarmupPolyLR: param groups {untagged} have no boolean '
                           "'vit' tag; build the optimizer with "
                           "constructor='mmeomt.EoMTOptimWrapperConstructor'")
        self.warmup_iters = warmup_iters
        self.vit_warmup_iters = vit_warmup_iters
        self.power = power
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)

    @staticmethod
    def _resolve(name: str, iters, fraction, default: int, total: int) -> int:
        """One warm-up in iterations, from ``{name}_iters`` or ``{name}_fraction``."""
        field = f'param_scheduler[TwoStageWarmupPolyLR].{name}'
        if iters is not None and fraction is not None:
            raise ValueError(f'TwoStageWarmupPolyLR: give {name}_iters or {name}_fraction, not '
                             f'both (got {iters!r} and {fraction!r}); in a config set the other '
                             f'to None, e.g. {field}_iters=None')
        if fraction is not None:
            if not (is_fraction(fraction) and fraction < 1):
                raise ValueError(f'TwoStageWarmupPolyLR: {field}_fraction must be a float in '
                                 f'[0, 1) (a fraction of end - begin), got {fraction!r}')
            return fraction_to_iter(fraction, total)
        if iters is None:
            return default
        if not is_iters(iters):
            raise ValueError(f'TwoStageWarmupPolyLR: {field}_iters must be an int >= 0 '
                             f'(iterations; {name}_fraction takes a fraction), got {iters!r}')
        return int(iters)

    def _get_value(self) -> List[float]:
        total = self.end - self.begin
        return [
            two_stage_warmup_poly(self.last_step, base, group.get('vit', False), total,
                                  self.warmup_iters, self.vit_warmup_iters, self.power)
            for base, group in zip(self.base_values, self.optimizer.param_groups)
        ]

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # The optimizer's saved lrs are already these; recomputing makes the resumed lr
        # independent of whether (and in which order) the optimizer state was restored.
        if self.begin <= self._global_step < self.end:
            for group, value in zip(self.optimizer.param_groups, self._get_value()):
                group[self.param_name] = value
            self._last_value = [g[self.param_name] for g in self.optimizer.param_groups]
