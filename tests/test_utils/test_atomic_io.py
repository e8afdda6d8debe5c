"""Checkpoint files: written atomically with the usual mode, leftovers of killed saves removed,
mmengine checkpoints load again on torch >= 2.6, and a file that is no checkpoint is named."""
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer, MessageHub, MMLogger
from mmengine.runner import CheckpointLoader

from mmeomt.engine import AtomicCheckpointHook
from mmeomt.utils.checkpoint_io import (ATOMIC_BACKEND, AtomicLocalBackend, _host_tag,
                                        atomic_write, default_file_mode, load_from_local,
                                        remove_stale_temporaries)
from mmeomt.utils.hub import load_checkpoint_file


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


def test_a_checkpoint_gets_the_mode_of_a_plain_open(tmp_path):
    # mkstemp creates its file 0o600; a checkpoint is meant to be read by others as any file.
    before = os.umask(0o022)
    try:
        atomic_write(b'x', tmp_path / 'iter_1.pth')
        assert (tmp_path / 'iter_1.pth').stat().st_mode & 0o777 == 0o644
        assert default_file_mode() == 0o644
        os.umask(0o007)
        atomic_write(b'y', tmp_path / 'iter_1.pth')
        assert (tmp_path / 'iter_1.pth').stat().st_mode & 0o777 == 0o660
    finally:
        os.umask(before)


KILLED_WHILE_WRITING = '''
import os, signal, sys
from mmeomt.utils import checkpoint_io
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies with the data written
checkpoint_io.atomic_write(b'new checkpoint', sys.argv[1])
'''


def test_sigkill_during_a_save_leaves_a_temporary_that_the_next_start_removes(tmp_path):
    target = tmp_path / 'iter_8.pth'
    target.write_bytes(b'previous checkpoint')
    done = subprocess.run([sys.executable, '-c', KILLED_WHILE_WRITING, str(target)],
                          capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]
    assert len(leftovers) == 1 and leftovers[0].startswith('.iter_8.pth.')
    assert target.read_bytes() == b'previous checkpoint'
    # One of a live writer (this test's process is alive, but it is not us writing: use a
    # sleeping child), one from another machine and one of the old unnamed form.
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        live = tmp_path / f'.iter_9.pth.{_host_tag()}.{sleeper.pid}.abcd1234.tmp'
        other_host = tmp_path / '.iter_9.pth.otherhost.12345.abcd1234.tmp'
        old_form = tmp_path / '.iter_4.pth.k2j3h4g5.tmp'
        for path in (live, other_host, old_form):
            path.write_bytes(b'partial')

        class Runner:  # what CheckpointHook.before_train reads
            work_dir = str(tmp_path)
            message_hub = MessageHub.get_instance('test_stale_temporaries')
            logger = MMLogger.get_instance('test_stale_temporaries')
            iter = epoch = 0

        hook = AtomicCheckpointHook(interval=1)
        hook.before_train(Runner())
        left = sorted(os.listdir(tmp_path))
        assert left == sorted(['iter_8.pth', live.name, other_host.name])
    finally:
        sleeper.kill()
        sleeper.wait()
    # The writer is gone now: the next start (or save) removes its file as well.
    assert remove_stale_temporaries(str(tmp_path)) == [str(live)]


@pytest.mark.parametrize('content', [os.urandom(4096), b'', b'<html>404 Not Found</html>',
                                     'truncated'])
def test_a_file_that_is_no_checkpoint_is_named_in_a_value_error(tmp_path, content):
    path = tmp_path / 'weights.pth'
    if content == 'truncated':
        torch.save(dict(w=torch.ones(1000)), path)
        content = path.read_bytes()[:3000]
    path.write_bytes(content)
    for load in (load_from_local, load_checkpoint_file,
                 lambda p: CheckpointLoader.load_checkpoint(p, map_location='cpu')):
        with pytest.raises(ValueError, match=r'weights\.pth is not a checkpoint: it is'):
            load(str(path))
    broken = tmp_path / 'weights.safetensors'
    broken.write_bytes(content[:100])
    with pytest.raises(ValueError, match=r'weights\.safetensors is not a readable'):
        load_from_local(str(broken))
