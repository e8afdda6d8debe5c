from .eomt_detector import EoMTDetector

__all__ = ['EoMTDetector']
