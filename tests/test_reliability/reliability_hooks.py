"""Test-only hooks for the training subprocesses of the reliability tests (imported through
``custom_imports``, with this folder on ``PYTHONPATH``)."""
import json
import os
import signal

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RecordLossesHook(Hook):
    """Appends ``{"iter": i, "rank": r, <loss name>: value, ...}`` (full precision) to
    ``<out_dir>/losses_rank<r>.jsonl`` after every training iteration, and SIGKILLs its own
    process after iteration ``kill_after`` (1-based, as mmengine logs iterations) if given."""

    priority = 'LOWEST'  # after the checkpoint hook: a checkpoint of that iteration is written

    def __init__(self, out_dir: str, kill_after: int = None):
        self.out_dir = out_dir
        self.kill_after = kill_after

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        record = {'iter': runner.iter + 1, 'rank': get_rank()}
        for name, value in (outputs or {}).items():
            record[name] = value.item() if isinstance(value, torch.Tensor) else float(value)
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, f'losses_rank{get_rank()}.jsonl')
        with open(path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())
        if self.kill_after is not None and runner.iter + 1 == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
