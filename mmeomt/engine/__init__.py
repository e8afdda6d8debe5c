"""Training machinery: the runner, mask annealing, layer-wise lr decay, two-stage warm-up,
schedule points as fractions of the run, atomic checkpoints, exact resume, data-parallel training
on the CPU."""
from .hooks import AtomicCheckpointHook, MaskAnnealingHook, SkippedImagesHook, annealed_prob
from .model_wrappers import CPUDistributedDataParallel
from .optimizers import AmpOptimWrapper, EoMTOptimWrapperConstructor, has_accelerator
from .runner import EoMTRunner
from .schedule_fractions import fraction_to_iter
from .schedulers import TwoStageWarmupPolyLR, two_stage_warmup_poly

__all__ = [
    'AtomicCheckpointHook', 'CPUDistributedDataParallel', 'EoMTRunner', 'SkippedImagesHook',
    'MaskAnnealingHook', 'annealed_prob', 'AmpOptimWrapper', 'has_accelerator',
    'EoMTOptimWrapperConstructor', 'TwoStageWarmupPolyLR', 'two_stage_warmup_poly',
    'fraction_to_iter'
]
