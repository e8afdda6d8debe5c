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
  for local paths.
"""
import io
import logging
import os
import os.path as osp
import pickle
import tempfile
from pathlib import Path
from typing import Union

import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from .hub import load_checkpoint_file

ATOMIC_BACKEND = 'mmeomt_atomic_local'


def atomic_write(data: Union[bytes, str], filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``filepath`` so that readers see the old file or the whole new one."""
    filepath = os.fspath(filepath)
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode(encoding)
    # The temporary file must be on the same file system for os.replace to be atomic.
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.', suffix='.tmp',
                                    dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
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
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if filename.endswith('.safetensors'):
        return load_checkpoint_file(filename, map_location)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        print_log(f'{filename} holds more than tensors (e.g. mmengine training state); loading '
                  'it with weights_only=False, which runs its pickled code: only load '
                  'checkpoints you trust.', logger='current', level=logging.WARNING)
        return torch.load(filename, map_location=map_location, weights_only=False)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
