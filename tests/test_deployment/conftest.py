"""Fixtures of the deployment tests: each task's ONNX export, made once per session (an export
takes a few seconds)."""
import importlib.util

import pytest

from deploy_helpers import TESTS, make_model, save_checkpoint, task_config


@pytest.fixture(scope='session')
def exported(tmp_path_factory):
    """``task -> (config file, checkpoint, onnx file, JSON report)`` of each task's model,
    exported once with the command-line tool (fixed input size, dynamic batch, default
    opset)."""
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
