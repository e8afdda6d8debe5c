"""Atomic files (mmeomt.utils.atomic_io): written atomically with the usual mode, leftovers of
killed saves removed, and the checkpoint hook writes through the atomic backend.
(Reading checkpoints is tested in tests/test_models/test_checkpoint/test_loading.py.)"""
import os
import signal
import subprocess
import sys

import pytest
from mmengine.fileio import get_file_backend
from mmengine.logging import MessageHub, MMLogger

from mmeomt.engine import AtomicCheckpointHook
from mmeomt.utils.atomic_io import (ATOMIC_BACKEND, AtomicLocalBackend, _host_tag, atomic_write,
                                    default_file_mode, remove_stale_temporaries)


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
from mmeomt.utils import atomic_io
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies with the data written
atomic_io.atomic_write(b'new checkpoint', sys.argv[1])
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
