from .atomic_checkpoint_hook import AtomicCheckpointHook
from .mask_annealing_hook import MaskAnnealingHook, annealed_prob

__all__ = ['AtomicCheckpointHook', 'MaskAnnealingHook', 'annealed_prob']
