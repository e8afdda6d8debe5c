from .amp_optim_wrapper import AmpOptimWrapper, has_accelerator
from .layer_decay_constructor import EoMTOptimWrapperConstructor

__all__ = ['AmpOptimWrapper', 'has_accelerator', 'EoMTOptimWrapperConstructor']
