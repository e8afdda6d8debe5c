from .backbones import DINOv3ViT, EoMTViT
from .detectors import EoMTDetector
from .eomt import EoMT
from .losses import EoMTLoss
from .segmentors import EoMTSegDataPreProcessor, EoMTSegmentor

__all__ = ['DINOv3ViT', 'EoMTViT', 'EoMT', 'EoMTLoss', 'EoMTDetector', 'EoMTSegmentor',
           'EoMTSegDataPreProcessor']
