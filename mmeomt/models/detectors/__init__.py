from .eomt_detector import EoMTDetector
from .fusion_head import EoMTFusionHead

__all__ = ['EoMTDetector', 'EoMTFusionHead']
