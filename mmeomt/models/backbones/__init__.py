from .dinov3 import DINOv3ViT
from .vit import EoMTViT, attention, block_forward

#: the EoMT encoders; the core and the optimiser constructor accept any of them
VIT_BACKBONES = (EoMTViT, DINOv3ViT)

__all__ = ['DINOv3ViT', 'EoMTViT', 'VIT_BACKBONES', 'attention', 'block_forward']
