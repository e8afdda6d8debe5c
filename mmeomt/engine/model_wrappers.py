"""Data-parallel training of a model on the CPU (gloo), see :mod:`mmeomt.utils.dist`."""
from mmengine.model import MMDistributedDataParallel

from mmeomt.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's ``MMDistributedDataParallel`` for a model whose parameters are on the CPU.

    mmengine's Runner passes ``device_ids=[LOCAL_RANK]`` to every DDP wrapper; torch refuses
    device ids for a CPU module, so they are dropped here (a GPU model keeps them).  Everything
    else -- ``train_step``, gradient averaging across the ranks -- is mmengine's and torch's.
    """

    def __init__(self, module, detect_anomalous_params: bool = False, device_ids=None,
                 **kwargs):
        devices = {p.device.type for p in module.parameters()}
        if devices <= {'cpu'}:
            device_ids = None
        super().__init__(module, detect_anomalous_params, device_ids=device_ids, **kwargs)
