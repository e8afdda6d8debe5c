"""Mixed precision that also runs on a machine without an accelerator."""
import torch
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.optim import AmpOptimWrapper as _MMEngineAmpOptimWrapper
from mmengine.optim import OptimWrapper

from mmeomt.registry import OPTIM_WRAPPERS


def has_accelerator() -> bool:
    """Whether mmengine's ``AmpOptimWrapper`` accepts this machine."""
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


@OPTIM_WRAPPERS.register_module()
class AmpOptimWrapper(_MMEngineAmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper``, also on the CPU.

    mmengine 0.10.7's wrapper asserts an accelerator in ``__init__``, although its ``autocast``
    supports the CPU (bfloat16 only).  With an accelerator this class *is* mmengine's wrapper;
    without one it autocasts to bfloat16 and skips loss scaling (bfloat16 has float32's exponent
    range, so gradients do not underflow; the scaler is a disabled ``GradScaler``, which keeps
    mmengine's ``backward``/``step``/``state_dict`` code paths unchanged).

    Args:
        loss_scale: as mmengine's (ignored on the CPU).
        dtype: as mmengine's; on the CPU only ``'bfloat16'`` (or None) is accepted.
        use_fsdp: as mmengine's.
        **kwargs: passed to :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, loss_scale='dynamic', dtype=None, use_fsdp: bool = False, **kwargs):
        if has_accelerator():
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(f'AmpOptimWrapper: on the CPU autocast supports only bfloat16, got '
                             f'dtype={dtype!r}')
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        self.cast_dtype = torch.bfloat16
