"""The loading policy (mmeomt.models.checkpoint.loading) and what importing mmeomt leaves alone.

What it promises:
* plain weight files load with ``torch.load(weights_only=True)``; a file that holds more (an
  mmengine training checkpoint) is refused with a ``RuntimeError`` unless the caller opts in
  with ``allow_pickle=True``, which loads it with a warning; ``EoMTRunner`` opts in for local
  ``load_from`` / ``resume`` files, so training checkpoints resume;
* a file that is no checkpoint at all is named in a ``ValueError`` saying what it looks like;
* ``import mmeomt`` (and building an EoMT model) leaves mmengine's ``CheckpointLoader`` schemes
  and ``mmengine.fileio``'s backends and prefixes as they are, and an mmengine load of a local
  file behaves exactly as without mmeomt.
"""
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.logging import HistoryBuffer, MMLogger

from mmeomt.engine import EoMTRunner
from mmeomt.models.checkpoint import load_checkpoint_file

REPO = Path(__file__).resolve().parents[3]


class Records(logging.Handler):
    """Collects the messages of mmengine's logger (which does not propagate to caplog)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def training_checkpoint(path):
    """What mmengine's Runner saves next to the weights: message-hub buffers of numpy arrays,
    which torch >= 2.6's default weights_only=True refuses."""
    buffer = HistoryBuffer()
    buffer.update(1.5)
    torch.save(dict(state_dict=dict(w=torch.ones(2)), message_hub=dict(loss=buffer)), path)
    return path


def test_training_state_needs_allow_pickle_and_is_logged(tmp_path):
    path = str(training_checkpoint(tmp_path / 'iter_2.pth'))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    with pytest.raises(RuntimeError, match=r'iter_2\.pth holds more than tensors.*allow_pickle'):
        load_checkpoint_file(path)
    handler = Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        loaded = load_checkpoint_file(path, allow_pickle=True)
    finally:
        logger.removeHandler(handler)
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert loaded['message_hub']['loss'].current() == 1.5
    assert any('weights_only=False' in m for m in handler.messages)


def test_the_runner_reads_local_training_checkpoints_strictly(tmp_path):
    """EoMTRunner.load_checkpoint (load_from, and resume, which calls it) reads the runner's
    own checkpoints and loads them strictly."""
    from mmengine.model import BaseModel

    class Tiny(BaseModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))

        def forward(self, *args, **kwargs):
            return {}

    runner = EoMTRunner(model=Tiny(), work_dir=str(tmp_path / 'work'), log_level='WARNING')
    checkpoint = runner.load_checkpoint(str(training_checkpoint(tmp_path / 'iter_2.pth')))
    assert torch.equal(runner.model.w, torch.ones(2))
    assert checkpoint['message_hub']['loss'].current() == 1.5
    torch.save({'v': torch.zeros(1)}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match=r'(?s)missing keys \(1\):\s+w.*unexpected keys'):
        runner.load_checkpoint(str(tmp_path / 'other.pth'))


def test_plain_weights_load_weights_only(tmp_path, monkeypatch):
    path = tmp_path / 'weights.pth'
    torch.save(dict(w=torch.zeros(3)), path)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **k: calls.append(k) or real_load(*a, **k))
    assert torch.equal(load_checkpoint_file(str(path), allow_pickle=True)['w'], torch.zeros(3))
    assert [c['weights_only'] for c in calls] == [True]
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(str(tmp_path / 'missing.pth'))


# Random bytes that do not start as a pickle (b'\x80'), which a legacy torch file would.
@pytest.mark.parametrize('content', [b'\x13' + os.urandom(4095), b'',
                                     b'<html>404 Not Found</html>', 'truncated'])
def test_a_file_that_is_no_checkpoint_is_named_in_a_value_error(tmp_path, content):
    path = tmp_path / 'weights.pth'
    if content == 'truncated':
        torch.save(dict(w=torch.ones(1000)), path)
        content = path.read_bytes()[:3000]
    path.write_bytes(content)
    for allow_pickle in (False, True):
        with pytest.raises(ValueError, match=r'weights\.pth is not a checkpoint: it is'):
            load_checkpoint_file(str(path), allow_pickle=allow_pickle)
    broken = tmp_path / 'weights.safetensors'
    broken.write_bytes(content[:100])
    with pytest.raises(ValueError, match=r'weights\.safetensors is not a readable'):
        load_checkpoint_file(str(broken))


# ------------------------------------------------------------------------------------------
# No side effects on import
# ------------------------------------------------------------------------------------------
REGISTRATIONS = '''
import json, sys
from mmengine.fileio.backends import backends, prefix_to_backends
from mmengine.runner import CheckpointLoader
# The libraries mmeomt builds on, imported first: their own registrations are not ours.
import mmdet.apis, mmdet.models, mmseg.apis, mmseg.models, mmpretrain.models  # noqa

def snapshot():
    name = lambda obj: f'{obj.__module__}.{obj.__qualname__}'
    return dict(schemes={p: name(f) for p, f in CheckpointLoader._schemes.items()},
                backends={k: name(v) for k, v in backends.items()},
                prefixes={k: name(v) for k, v in prefix_to_backends.items()})

before = snapshot()
import mmeomt, mmeomt.models, mmeomt.apis, mmeomt.engine  # noqa
from mmengine.registry import init_default_scope
from mmeomt.registry import MODELS
init_default_scope('mmdet')
MODELS.build(dict(
    type='mmeomt.EoMTDetector',
    eomt=dict(type='mmeomt.EoMT', num_classes=3, num_queries=4, num_blocks=1,
              backbone=dict(type='mmeomt.EoMTViT', img_size=32, arch=dict(
                  embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64))),
    loss=dict(type='mmeomt.EoMTLoss', num_points=16), num_things_classes=2,
    num_stuff_classes=1))
print(json.dumps(dict(before=before, after=snapshot())))
'''

PLAIN_LOADS = '''
import json, sys
import torch
if sys.argv[2] == 'mmeomt':
    import mmeomt, mmeomt.models  # noqa
from mmengine.runner import CheckpointLoader, load_checkpoint
outcomes = {}
for name in ('weights.pth', 'training.pth', 'noise.pth', 'model.safetensors'):
    path = sys.argv[1] + '/' + name
    try:
        loaded = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        outcomes[name] = sorted(loaded)
    except Exception as error:
        outcomes[name] = type(error).__name__
model = torch.nn.Linear(2, 3)
load_checkpoint(model, sys.argv[1] + '/linear.pth', strict=False)  # one key missing: a warning
outcomes['linear'] = model.weight.tolist()
print(json.dumps(outcomes))
'''


def _run(code, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    done = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(REPO))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_mmeomt_registers_nothing_with_mmengine():
    seen = _run(REGISTRATIONS)
    assert seen['after'] == seen['before']
    assert seen['before']['schemes']['']  # mmengine's own loaders are there to compare


def test_an_mmengine_load_is_the_same_with_and_without_mmeomt(tmp_path):
    from safetensors.torch import save_file
    torch.save(dict(w=torch.zeros(3)), tmp_path / 'weights.pth')
    training_checkpoint(tmp_path / 'training.pth')
    (tmp_path / 'noise.pth').write_bytes(os.urandom(512))
    save_file({'w': torch.ones(2)}, str(tmp_path / 'model.safetensors'))
    torch.save(dict(weight=torch.full((3, 2), 7.0)), tmp_path / 'linear.pth')
    without = _run(PLAIN_LOADS, str(tmp_path), 'plain')
    assert without['weights.pth'] == ['w'] and without['linear'] == [[7.0, 7.0]] * 3
    assert _run(PLAIN_LOADS, str(tmp_path), 'mmeomt') == without
