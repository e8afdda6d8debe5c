from .eomt_runner import EoMTRunner

__all__ = ['EoMTRunner']
