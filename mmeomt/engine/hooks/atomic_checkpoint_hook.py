"""``CheckpointHook`` whose checkpoints are either complete or absent (see ``checkpoint_io``)."""
from typing import Optional

from mmengine.hooks import CheckpointHook

from mmeomt.registry import HOOKS
from mmeomt.utils.checkpoint_io import ATOMIC_BACKEND


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` writing through :class:`AtomicLocalBackend`.

    All arguments are mmengine's.  When neither ``backend_args`` nor ``file_client_args`` is
    given and ``out_dir`` is local (or unset, i.e. the work dir), checkpoint files are written to
    a temporary file and renamed into place; remote ``out_dir``s keep their own backend.

    The small ``last_checkpoint`` pointer is still written by mmengine directly;
    ``tools/train.py --resume auto`` falls back to the newest intact ``iter_*.pth`` if that
    pointer is unusable.
    """

    def __init__(self, *args, out_dir: Optional[str] = None,
                 backend_args: Optional[dict] = None, file_client_args: Optional[dict] = None,
                 **kwargs):
        is_local = out_dir is None or '://' not in str(out_dir)
        if backend_args is None and file_client_args is None and is_local:
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, out_dir=out_dir, backend_args=backend_args,
                         file_client_args=file_client_args, **kwargs)
