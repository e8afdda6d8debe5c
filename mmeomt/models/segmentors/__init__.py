from .eomt_segmentor import EoMTSegmentor

__all__ = ['EoMTSegmentor']
