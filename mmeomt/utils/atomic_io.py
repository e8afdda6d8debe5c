"""Files that are complete or absent: atomic writes, and the leftovers of killed ones.

* **Atomic writes.**  mmengine writes a checkpoint with ``LocalBackend.put``, i.e.
  ``open(path, 'wb')`` and one ``write``: a job killed while writing (pre-emption, time limit,
  full disk) leaves a truncated ``iter_N.pth``, which ``--resume`` then fails on.
  :func:`atomic_write` writes to a temporary file in the same directory, ``fsync``-s it and
  ``os.replace``-s it onto the target (atomic on POSIX and Windows), so a file is either
  complete or absent.  :class:`AtomicLocalBackend` is mmengine's local backend writing that
  way; ``AtomicCheckpointHook`` registers it (under :data:`ATOMIC_BACKEND`, with
  :func:`register_atomic_backend`) when it is built, not on import.
* **Leftovers of a killed save.**  A process killed between creating its temporary file and
  renaming it leaves ``.<name>.<host>.<pid>.<random>.tmp`` behind;
  :func:`remove_stale_temporaries` deletes those whose writer is gone (the checkpoint hook calls
  it when training starts and before every save).  Files get the mode a plain ``open`` would
  give them (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.

Reading checkpoints is :mod:`mmeomt.models.checkpoint`.
"""
import io
import os
import os.path as osp
import re
import socket
import tempfile
from pathlib import Path
from typing import List, Union

import torch
from mmengine.fileio import LocalBackend, register_backend

ATOMIC_BACKEND = 'mmeomt_atomic_local'


def _host_tag() -> str:
    """This machine's name as it appears in temporary file names (no dots: they separate)."""
    return re.sub(r'[^A-Za-z0-9_-]', '_', socket.gethostname()) or 'host'


def default_file_mode() -> int:
    """The mode ``open(path, 'w')`` gives a new file: ``0o666`` less the process umask."""
    try:  # Linux: read the umask without changing it (os.umask would, for a moment).
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# ``.<target name>.<host>.<pid>.<random>.tmp`` (the random part is mkstemp's); the old form
# ``.<target name>.<random>.tmp`` (written before the host and pid were part of the name) too.
_TEMPORARY = re.compile(
    r'^\.(?P<target>.+?)\.(?:(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp$')


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(directory: str) -> List[str]:
    """Delete the temporary files :func:`atomic_write` left in ``directory`` when its process
    was killed mid-write; returns their paths.

    A temporary file is stale when it was written on this machine by a process that no longer
    runs (or by this process, which is not writing now), or has the old name without host and
    pid.  Files of live writers and of other machines (a shared file system) are kept.
    """
    if not osp.isdir(directory):
        return []
    host, removed = _host_tag(), []
    for name in sorted(os.listdir(directory)):
        match = _TEMPORARY.match(name)
        if match is None:
            continue
        if match['pid'] is not None:
            pid = int(match['pid'])
            if match['host'] != host or (pid != os.getpid() and _is_running(pid)):
                continue
        path = osp.join(directory, name)
        try:
            os.remove(path)
        except FileNotFoundError:  # removed meanwhile
            continue
        removed.append(path)
    return removed


def atomic_write(data: Union[bytes, str], filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``filepath`` so that readers see the old file or the whole new one.

    The new file gets :func:`default_file_mode`, as a plain ``open`` would give it.
    """
    filepath = os.fspath(filepath)
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode(encoding)
    # The temporary file must be on the same file system for os.replace to be atomic; host and
    # pid in its name tell remove_stale_temporaries whether its writer is still alive.
    fd, tmp_path = tempfile.mkstemp(
        prefix=f'.{osp.basename(filepath)}.{_host_tag()}.{os.getpid()}.', suffix='.tmp',
        dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), default_file_mode())
            os.fsync(f.fileno())
        os.replace(tmp_path, filepath)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (see :func:`atomic_write`)."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write(obj, filepath, encoding)


def atomic_torch_save(obj, filepath: Union[str, Path]) -> None:
    """``torch.save`` that never leaves a half-written file (see :func:`atomic_write`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(buffer.getvalue(), filepath)


def register_atomic_backend() -> None:
    """Register :class:`AtomicLocalBackend` with mmengine's file backends as
    :data:`ATOMIC_BACKEND` (idempotent; adds a name, replaces nothing)."""
    from mmengine.fileio.backends import backends
    if backends.get(ATOMIC_BACKEND) is not AtomicLocalBackend:
        register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'atomic_torch_save', 'atomic_write',
           'default_file_mode', 'register_atomic_backend', 'remove_stale_temporaries']
