from .data_preprocessor import EoMTSegDataPreProcessor
from .eomt_segmentor import EoMTSegmentor

__all__ = ['EoMTSegmentor', 'EoMTSegDataPreProcessor']
