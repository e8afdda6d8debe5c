from .backbones import EoMTViT
from .detectors import EoMTDetector
from .eomt import EoMT
from .losses import EoMTLoss
from .segmentors import EoMTSegDataPreProcessor, EoMTSegmentor

__all__ = ['EoMTViT', 'EoMT', 'EoMTLoss', 'EoMTDetector', 'EoMTSegmentor',
           'EoMTSegDataPreProcessor']
