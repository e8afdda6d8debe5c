from .backbones import EoMTViT
from .detectors import EoMTDetector
from .eomt import EoMT
from .losses import EoMTLoss
from .segmentors import EoMTSegmentor

__all__ = ['EoMTViT', 'EoMT', 'EoMTLoss', 'EoMTDetector', 'EoMTSegmentor']
