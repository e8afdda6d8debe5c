from .inferencer import EoMTDetInferencer, EoMTInferencer, EoMTSegInferencer
from .model_zoo import default_model_index, get_model_info, load_model_zoo

__all__ = ['EoMTInferencer', 'EoMTDetInferencer', 'EoMTSegInferencer', 'default_model_index',
           'get_model_info', 'load_model_zoo']
