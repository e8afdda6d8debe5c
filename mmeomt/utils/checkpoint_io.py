"""Checkpoint files for mmengine 0.10.7 on a current torch: written atomically, readable again.

* **Atomic writes.**  mmengine writes a checkpoint with ``LocalBackend.put``, i.e.
  ``open(path, 'wb')`` and one ``write``: a job killed while writing (pre-emption, time limit,
  full disk) leaves a truncated ``iter_N.pth``, which ``--resume`` then fails on.
  :class:`AtomicLocalBackend` writes to a temporary file in the same directory, ``fsync``-s it
  and ``os.replace``-s it onto the target (atomic on POSIX and Windows), so a checkpoint is
  either complete or absent.  ``AtomicCheckpointHook`` uses it.
* **Loading training checkpoints.**  Since torch 2.6, ``torch.load`` defaults to
  ``weights_only=True``; mmengine 0.10.7 does not pass the argument, and its own checkpoints
  (message hub ``HistoryBuffer``s holding numpy arrays) are refused, so ``resume`` fails
  (open-mmlab/mmengine#1655).  Allow-listing the needed globals would include ``getattr``, which
  makes the restriction moot.  :func:`load_from_local` therefore keeps ``weights_only=True``
  for plain weight files and falls back to a full unpickle, with a warning, only for local files
  that need it (files from URLs are never unpickled: :mod:`mmeomt.utils.hub`).  It also reads
  ``*.safetensors`` files, which mmengine's local loader cannot.  ``import mmeomt`` registers it
  for local paths.  A file that is not a checkpoint at all (random bytes, a truncated download,
  an HTML error page saved as ``.pth``) fails with a ``ValueError`` that names it, instead of
  whatever the unpickler tripped over.
* **Leftovers of a killed save.**  A process killed between creating its temporary file and
  renaming it leaves ``.<name>.<host>.<pid>.<random>.tmp`` behind;
  :func:`remove_stale_temporaries` deletes those whose writer is gone (the checkpoint hook calls
  it when training starts and before every save).  Checkpoints get the mode a plain ``open``
  would give them (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
"""
import io
import logging
import os
import os.path as osp
import pickle
import re
import socket
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional, Union

import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from .hub import UNREADABLE_CHECKPOINT, load_checkpoint_file, not_a_checkpoint

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


def load_from_local(filename: str, map_location=None):
    """``torch.load`` a local checkpoint: weights-only if possible, else fully (with a warning).

    Replaces mmengine's loader of the same name for local paths (same interface and errors;
    mmengine names the scheme in its log after this function's name).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint (see :func:`not_a_checkpoint`).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if filename.endswith('.safetensors'):
        return load_checkpoint_file(filename, map_location)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not str(error).startswith('Weights only load failed'):
            raise not_a_checkpoint(filename, error) from None
        first_error = error
    except UNREADABLE_CHECKPOINT as error:
        raise not_a_checkpoint(filename, error) from None
    try:
        checkpoint = torch.load(filename, map_location=map_location, weights_only=False)
    except UNREADABLE_CHECKPOINT as error:
        # Refused by the weights-only unpickler and unreadable in full: not a checkpoint.
        raise not_a_checkpoint(filename, error) from first_error
    print_log(f'{filename} holds more than tensors (e.g. mmengine training state); loaded '
              'it with weights_only=False, which runs its pickled code: only load '
              'checkpoints you trust.', logger='current', level=logging.WARNING)
    return checkpoint


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a complete checkpoint written by ``torch.save``, or None.

    Cheap (no unpickling): the file must exist, be non-empty and be a zip archive whose
    end-of-archive record is present, which a file truncated mid-write lacks.
    """
    if not osp.exists(path):
        return 'the file does not exist'
    if not osp.isfile(path):
        return 'it is not a file'
    if osp.getsize(path) == 0:
        return 'the file is empty'
    if not zipfile.is_zipfile(path):
        return ('it is not a complete zip archive (truncated, e.g. killed while writing, or '
                'not written by torch.save)')
    return None


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
