from .panoptic_metric import CocoPanopticMetric

__all__ = ['CocoPanopticMetric']
