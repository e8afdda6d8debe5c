"""Distributed start-up that also works on machines without a GPU.

mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` before it creates the process
group, whatever the backend, so ``torchrun`` on a CPU machine dies with "Found no NVIDIA driver"
in every rank.  :func:`init_distributed` creates the process group itself in that case, with
the gloo backend (NCCL needs GPUs), from torchrun's variables (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``, so multi-node runs work as usual); the Runner then finds the
group initialised and skips ``init_dist``.  With an accelerator nothing changes: mmengine
initialises the config's backend (NCCL) as before.  mmengine itself is not patched.
"""
import datetime
import os

import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log


def init_distributed(cfg: Config) -> bool:
    """Create the gloo process group for ``cfg.launcher`` on a machine without a GPU.

    Sets ``cfg.env_cfg.dist_cfg.backend = 'gloo'`` to match (the config of the run, as dumped
    to the work dir, then says what ran) and wraps the model in
    :class:`~mmeomt.engine.CPUDistributedDataParallel`.

    Returns:
        Whether this call created the process group (False: no launcher, a group exists
        already, or an accelerator is there and mmengine's ``init_dist`` will do it).

    Raises:
        RuntimeError: ``--launcher slurm`` or ``mpi`` without a GPU (only torchrun's
            ``pytorch`` launcher is supported on the CPU).
    """
    from mmeomt.engine import has_accelerator

    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch_dist.is_initialized() or has_accelerator():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs a GPU (mmengine sets a CUDA device for it); on a '
            'machine without one, start the processes with torchrun (tools/dist_train.sh, '
            'tools/dist_test.sh), i.e. --launcher pytorch, which runs them with gloo')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch: {", ".join(missing)} not set; start the '
                           'processes with torchrun (tools/dist_train.sh, tools/dist_test.sh)')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    requested = dist_cfg.get('backend', 'nccl')
    if requested != 'gloo':
        print_log(f'No GPU: the processes communicate with gloo instead of the config\'s '
                  f'{requested!r}', logger='current')
    dist_cfg['backend'] = 'gloo'
    kwargs = {}
    if dist_cfg.get('timeout') is not None:  # seconds in configs, as for mmengine's init_dist
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend='gloo', **kwargs)
    # The Runner hands mmengine's DDP wrapper device_ids=[LOCAL_RANK], which torch refuses
    # for a model on the CPU; the same wrapper without them.
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='mmeomt.CPUDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper['type'] = 'mmeomt.CPUDistributedDataParallel'
    return True
