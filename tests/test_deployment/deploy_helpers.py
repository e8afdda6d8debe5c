"""Helpers of the deployment tests: tiny models with non-trivial predictions, their checkpoints
and test images (the fixtures are in conftest.py)."""
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / 'test_apis'))
from apis_helpers import config  # noqa: E402

TASKS = ('panoptic', 'instance', 'semantic')


def task_config(task: str):
    """The tiny test config of ``task``; panoptic with a lower iou_thr, so that random masks
    (which overlap) leave several segments for the parity tests to compare."""
    cfg = config(task)
    if task == 'panoptic':
        cfg.model.test_cfg.iou_thr = 0.2
    return cfg


def make_model(task: str, seed: int = 0):
    """A tiny model whose queries are confident of various classes and whose masks are
    contrasted: panoptic, instance and semantic outputs with several segments."""
    from mmeomt.deployment import load_model
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'No weights given')
        model = load_model(task_config(task))
    core = model.eomt
    with torch.no_grad():
        core.class_head.weight.mul_(20)
        core.mask_head[4].weight.mul_(5)
    return model


def save_checkpoint(model, path: Path) -> Path:
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(model.dataset_meta))), path)
    return path


def images(seed: int = 0):
    """BGR uint8 images of various sizes and aspect ratios (landscape, portrait, square, one
    smaller than the crop and one with a 4:1 side ratio)."""
    rng = np.random.default_rng(seed)
    sizes = [(48, 80), (100, 60), (64, 64), (30, 40), (33, 130)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
