from .inferencer import EoMTDetInferencer, EoMTInferencer, EoMTSegInferencer
from .model_zoo import default_model_index, get_model_info, load_model_zoo
from .tiling import TiledPredictor

__all__ = ['EoMTInferencer', 'EoMTDetInferencer', 'EoMTSegInferencer', 'TiledPredictor',
           'default_model_index', 'get_model_info', 'load_model_zoo']
