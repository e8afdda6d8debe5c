"""Test-only hooks and a loss for the training subprocesses of the reliability tests (imported
through ``custom_imports``, with this folder on ``PYTHONPATH``)."""
import json
import os
import signal
from unittest import mock

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS, MODELS

from mmeomt.models.losses import EoMTLoss


@HOOKS.register_module()
class RecordLossesHook(Hook):
    """Appends ``{"iter": i, "rank": r, <logged name>: value, ...}`` (full precision) to
    ``<out_dir>/losses_rank<r>.jsonl``
    after every training iteration, SIGKILLs its own process after iteration ``kill_after``
    (1-based, as mmengine logs iterations) if given, and saves each rank's final weights as
    ``<out_dir>/weights_rank<r>.pth``."""

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

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(model.state_dict(), os.path.join(self.out_dir, f'weights_rank{get_rank()}.pth'))


def _fixed_points(*size, device=None, dtype=None, **kwargs) -> torch.Tensor:
    """What ``torch.rand(..., n, 2)`` is replaced by: the same ``n`` points in ``[0, 1)^2`` for
    every leading index (a golden-ratio lattice), whatever the batch they belong to."""
    shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
    *lead, n, two = shape
    assert two == 2, f'the loss drew random numbers of shape {shape}, not points'
    i = torch.arange(n, dtype=torch.float32, device=device)
    grid = torch.stack([(i * 0.6180339887 + 0.25) % 1.0, (i + 0.5) / n], dim=-1)
    return grid.expand(*lead, n, 2).clone()


@MODELS.register_module()
class GridPointsEoMTLoss(EoMTLoss):
    """EoMT's loss with its random points (every ``torch.rand`` it draws) replaced by fixed
    ones, the same for every image and mask, so that an image's loss does not depend on which
    other images share its batch or process: what lets a 2-process run be compared with one
    process at twice the batch.  (Only the public ``loss`` is overridden, so the loss may
    change inside.)  It also reports the batch's number of target masks as ``num_targets``
    (logged, not a loss: the name holds no "loss")."""

    def loss(self, mask_logits_list, class_logits_list, batch_gt_instances, batch_img_metas):
        with mock.patch.object(torch, 'rand', _fixed_points):
            losses = super().loss(mask_logits_list, class_logits_list, batch_gt_instances,
                                  batch_img_metas)
        losses['num_targets'] = class_logits_list[0].new_tensor(
            float(sum(len(g) for g in batch_gt_instances)))
        return losses
