"""Training machinery: mask annealing, layer-wise lr decay, two-stage warm-up, checkpoint I/O."""
from .hooks import AtomicCheckpointHook, MaskAnnealingHook, annealed_prob
from .optimizers import AmpOptimWrapper, EoMTOptimWrapperConstructor, has_accelerator
from .schedulers import TwoStageWarmupPolyLR, two_stage_warmup_poly

__all__ = [
    'AtomicCheckpointHook',
    'MaskAnnealingHook', 'annealed_prob', 'AmpOptimWrapper', 'has_accelerator',
    'EoMTOptimWrapperConstructor', 'TwoStageWarmupPolyLR', 'two_stage_warmup_poly'
]
