"""Checkpoint files: written atomically, and mmengine checkpoints load again on torch >= 2.6."""
import os
import pickle

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

from mmeomt.engine import AtomicCheckpointHook
from mmeomt.utils.checkpoint_io import (ATOMIC_BACKEND, AtomicLocalBackend, atomic_write,
                                        load_from_local)


def test_atomic_write_replaces_the_whole_file(tmp_path):
    target = tmp_path / 'sub' / 'iter_1.pth'
    atomic_write(b'first', target)
    atomic_write(b'second version', target)
    assert target.read_bytes() == b'second version'
    assert os.listdir(target.parent) == ['iter_1.pth']  # no temporary file left
    atomic_write('text', tmp_path / 'last_checkpoint')
    assert (tmp_path / 'last_checkpoint').read_text() == 'text'


@pytest.mark.parametrize('failing', ['fsync', 'replace'])
def test_a_crash_while_writing_leaves_the_old_checkpoint(tmp_path, monkeypatch, failing):
    target = tmp_path / 'iter_1.pth'
    target.write_bytes(b'complete old checkpoint')

    def crash(*args, **kwargs):
        raise KeyboardInterrupt('killed while writing')

    monkeypatch.setattr(os, failing, crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(b'new, never finished', target)
    monkeypatch.undo()
    assert target.read_bytes() == b'complete old checkpoint'
    assert os.listdir(tmp_path) == ['iter_1.pth']


def test_hook_uses_the_atomic_backend_for_local_dirs_only():
    assert AtomicCheckpointHook(interval=1).backend_args == dict(backend=ATOMIC_BACKEND)
    assert AtomicCheckpointHook(interval=1, out_dir='/data/ckpts').backend_args == dict(
        backend=ATOMIC_BACKEND)
    assert AtomicCheckpointHook(interval=1, out_dir='s3://bucket/run').backend_args is None
    explicit = dict(backend='local')
    assert AtomicCheckpointHook(interval=1, backend_args=explicit).backend_args == explicit
    assert isinstance(get_file_backend('x', backend_args=dict(backend=ATOMIC_BACKEND)),
                      AtomicLocalBackend)


def test_mmengine_training_state_loads_again(tmp_path):
    # What mmengine's Runner saves next to the weights: message-hub buffers of numpy arrays,
    # which torch >= 2.6's default weights_only=True refuses.
    path = tmp_path / 'iter_2.pth'
    buffer = HistoryBuffer()
    buffer.update(1.5)
    torch.save(dict(state_dict=dict(w=torch.ones(2)), message_hub=dict(loss=buffer)), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    for loaded in (load_from_local(str(path)),
                   CheckpointLoader.load_checkpoint(str(path), map_location='cpu')):
        assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
        assert loaded['message_hub']['loss'].current() == 1.5


def test_plain_weights_still_load_weights_only(tmp_path, monkeypatch):
    path = tmp_path / 'weights.pth'
    torch.save(dict(w=torch.zeros(3)), path)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **k: calls.append(k) or real_load(*a, **k))
    assert torch.equal(load_from_local(str(path))['w'], torch.zeros(3))
    assert [c['weights_only'] for c in calls] == [True]
    with pytest.raises(FileNotFoundError):
        load_from_local(str(tmp_path / 'missing.pth'))
