"""Fixtures of the deployment tests: tiny models with non-trivial predictions, their checkpoints
and their ONNX exports (made once per session: an export takes a few seconds)."""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / 'test_apis'))
from apis_helpers import config  # noqa: E402

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

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


@pytest.fixture(scope='session')
def exported(tmp_path_factory):
    """``task -> (config file, checkpoint, onnx file, JSON report)`` of each task's model,
    exported once with the command-line tool (fixed input size, dynamic batch, default
    opset)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'export_onnx', TESTS.parent / 'tools' / 'deployment' / 'export_onnx.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    folder = tmp_path_factory.mktemp('onnx')
    cache = {}

    def get(task: str):
        if task not in cache:
            checkpoint = save_checkpoint(make_model(task), folder / f'{task}.pth')
            cfg_file = folder / f'{task}.py'
            task_config(task).dump(str(cfg_file))
            onnx_file = folder / f'{task}.onnx'
            report = folder / f'{task}.json'
            assert tool.main([str(cfg_file), str(checkpoint), '--out', str(onnx_file),
                              '--json', str(report)]) == 0
            cache[task] = (cfg_file, checkpoint, onnx_file, report)
        return cache[task]

    return get
