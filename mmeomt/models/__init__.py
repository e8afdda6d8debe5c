from .backbones import EoMTViT
from .eomt import EoMT

__all__ = ['EoMTViT', 'EoMT']
