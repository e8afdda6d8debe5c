from .coco import (ADE20KPanopticDataset, CocoDataset, CocoPanopticDataset,
                   NamedSampleErrorsMixin)
from .image_check import UnreadableImageError, find_unreadable, image_problem
from .seg import ADE20KDataset, CityscapesDataset, SegDataset
from .synthetic import generate_synthetic_dataset
from .synthetic_datasets import (SyntheticInstanceDataset, SyntheticPanopticDataset,
                                 SyntheticSemanticDataset)
from .transforms import LoadPanopticAnnotations
from .wrappers import SkipUnreadableImages

__all__ = [
    'generate_synthetic_dataset', 'SyntheticPanopticDataset', 'SyntheticInstanceDataset',
    'SyntheticSemanticDataset', 'CocoDataset', 'CocoPanopticDataset', 'ADE20KPanopticDataset',
    'ADE20KDataset', 'CityscapesDataset', 'SegDataset', 'NamedSampleErrorsMixin', 'LoadPanopticAnnotations',
    'UnreadableImageError', 'image_problem', 'find_unreadable', 'SkipUnreadableImages'
]
