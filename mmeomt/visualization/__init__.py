"""Drawing EoMT's predictions beside the ground truth with mmdet's and mmseg's visualisers."""
from .comparison import draw_comparison, panoptic_gt_as_prediction

__all__ = ['draw_comparison', 'panoptic_gt_as_prediction']
