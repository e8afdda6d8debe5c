from .atomic_checkpoint_hook import AtomicCheckpointHook
from .mask_annealing_hook import MaskAnnealingHook, annealed_prob
from .skipped_images_hook import SkippedImagesHook, exclude_from_metrics
from .visualization_hook import DetVisualizationHook

__all__ = ['AtomicCheckpointHook', 'MaskAnnealingHook', 'annealed_prob', 'SkippedImagesHook',
           'exclude_from_metrics', 'DetVisualizationHook']
