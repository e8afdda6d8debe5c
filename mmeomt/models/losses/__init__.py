from .eomt_loss import EoMTLoss

__all__ = ['EoMTLoss']
