from .vit import EoMTViT, attention, block_forward

__all__ = ['EoMTViT', 'attention', 'block_forward']
