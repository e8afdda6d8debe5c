"""Checkpoints from URLs, cached under one path per URL.

mmengine's ``http(s)://`` loader caches a download under its file *name* only
(``~/.cache/torch/checkpoints/<basename>``).  Every released EoMT checkpoint is called
``pytorch_model.bin`` (``https://huggingface.co/tue-mps/<name>/resolve/main/pytorch_model.bin``),
and so are timm's DINOv2 weights: the second model a user loads would silently get the first
one's weights.  This module replaces that loader for ``http://`` and ``https://`` (importing
:mod:`mmeomt` registers it with mmengine's ``CheckpointLoader``, so ``load_from``,
``init_cfg=dict(type='Pretrained', checkpoint=URL)`` and the inferencers all use it):

* **one path per URL**: ``<torch hub dir>/checkpoints/mmeomt/<host>/<path of the URL>``, e.g.
  ``~/.cache/torch/hub/checkpoints/mmeomt/huggingface.co/tue-mps/coco_panoptic_eomt_large_640/
  resolve/main/pytorch_model.bin`` (``$TORCH_HOME`` moves it, as for torch.hub).  A cached file
  is used as it is, so a file put there beforehand (``tools/download.py``) makes ``load_from=URL``
  work offline.
* **atomic downloads**: torch.hub's ``download_url_to_file`` writes a temporary file next to the
  target and renames it, so an interrupted download never leaves a truncated checkpoint; in a
  distributed run rank 0 downloads first and the other ranks wait (as mmengine does).
* **safe loading**: ``*.safetensors`` are read with ``safetensors``, everything else with
  ``torch.load(weights_only=True)`` (the default since torch 2.6).  A downloaded file that holds
  more than tensors is refused with the path of its local copy; load that path if you trust it.
"""
import hashlib
import os
import os.path as osp
import pickle
import re
import zipfile
from typing import Optional
from urllib.error import URLError
from urllib.parse import unquote, urlsplit

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from safetensors.torch import load_file as load_safetensors

#: The ``re.match`` pattern registered with ``CheckpointLoader``.  mmengine tries its schemes in
#: descending string order: ``'https?://'`` sorts before mmengine's own ``'https://'`` and
#: ``'http://'``, so it takes every http(s) URL.
URL_SCHEME = r'https?://'

_UNSAFE = re.compile(r'[^A-Za-z0-9._+=@,-]')


def cache_root() -> str:
    """``<torch hub dir>/checkpoints/mmeomt`` (``$TORCH_HOME/hub/...``, ``~/.cache/torch/hub``)."""
    return osp.join(torch.hub.get_dir(), 'checkpoints', 'mmeomt')


def _safe(part: str) -> str:
    part = _UNSAFE.sub('_', unquote(part))
    return '_' if part in ('', '.', '..') else part


def url_cache_path(url: str, root: Optional[str] = None) -> str:
    """Where the file at ``url`` is cached: ``<root>/<host>/<path>``, one path per URL.

    Path segments are kept readable; characters outside ``[A-Za-z0-9._+=@,-]`` become ``_``
    (a port's ``:`` too), and a query string adds a ``q-<sha256>`` folder so that URLs that
    differ only in it do not share a file.

    Args:
        url: an ``http://`` or ``https://`` URL naming a file.
        root: cache folder; default :func:`cache_root`.

    Raises:
        ValueError: not an http(s) URL, or no file name in its path.
    """
    parts = urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.netloc:
        raise ValueError(f'url_cache_path: expected an http(s):// URL, got {url!r}')
    segments = [s for s in parts.path.split('/') if s]
    if not segments or parts.path.endswith('/'):
        raise ValueError(f'url_cache_path: the URL names no file: {url!r}')
    folders = [_safe(parts.netloc)] + [_safe(s) for s in segments[:-1]]
    if parts.query:
        folders.append('q-' + hashlib.sha256(parts.query.encode()).hexdigest()[:16])
    return osp.join(root or cache_root(), *folders, _safe(segments[-1]))


def download(url: str, dst: Optional[str] = None, progress: bool = False,
             force: bool = False) -> str:
    """Download ``url`` to ``dst`` (default :func:`url_cache_path`) unless it is there already.

    The file appears atomically (temporary file + rename).

    Returns:
        the local path.

    Raises:
        RuntimeError: the download failed; the message names the URL and the path where a
            manually fetched copy would be used.
    """
    dst = dst or url_cache_path(url)
    if osp.isfile(dst) and not force:
        return dst
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    print_log(f'Downloading {url} to {dst}', logger='current')
    try:
        torch.hub.download_url_to_file(url, dst, progress=progress)
    except (URLError, OSError, ValueError) as error:
        raise RuntimeError(f'Could not download {url}: {error}. Without network access, put the '
                           f'file at {dst} (tools/download.py does) and load the URL again.'
                           ) from error
    return dst


def not_a_checkpoint(filename: str, error: BaseException) -> ValueError:
    """The error for a file that cannot be read as a checkpoint at all: names the file and
    says what it looks like instead."""
    with open(filename, 'rb') as f:
        head = f.read(4)
    if not head:
        what = 'an empty file'
    elif zipfile.is_zipfile(filename):
        what = 'a zip archive that torch.load cannot read (damaged, or not written by torch.save)'
    elif head.startswith(b'PK'):
        what = ('a truncated zip archive: a torch checkpoint cut short (killed while writing, '
                'an interrupted copy or download)')
    elif head[:1] == b'\x80':
        what = 'a damaged or truncated legacy (non-zip) torch checkpoint'
    else:
        what = ('neither a torch checkpoint (a zip archive written by torch.save) nor a '
                '.safetensors file')
    detail = str(error).splitlines()[0] if str(error) else ''
    return ValueError(f'{filename} is not a checkpoint: it is {what} '
                      f'(torch.load: {type(error).__name__}: {detail[:200]})')


#: What ``torch.load`` raises on bytes it cannot parse (random data, truncation, a text file).
UNREADABLE_CHECKPOINT = (pickle.UnpicklingError, RuntimeError, EOFError, UnicodeDecodeError,
                         KeyError, ValueError, IndexError, TypeError, OverflowError, MemoryError,
                         zipfile.BadZipFile)


def load_checkpoint_file(path: str, map_location=None, source: Optional[str] = None):
    """Read a checkpoint: ``.safetensors`` with safetensors, anything else with
    ``torch.load(weights_only=True)``.

    Args:
        path: local file.
        map_location: as for ``torch.load``; a safetensors file is read onto the device given
            as a string or ``torch.device`` (else the CPU).
        source: the URL the file came from (for the error message).

    Raises:
        RuntimeError: a torch checkpoint with more than tensors and plain containers.
        ValueError: a file that is no checkpoint at all (see :func:`not_a_checkpoint`).
    """
    if path.endswith('.safetensors'):
        device = map_location if isinstance(map_location, (str, torch.device)) else 'cpu'
        try:
            return load_safetensors(path, device=str(device))
        except Exception as error:  # safetensors raises its own SafetensorError
            raise ValueError(f'{path} is not a readable .safetensors file (truncated or '
                             f'damaged): {error}') from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        with open(path, 'rb') as f:
            head = f.read(1)
        is_torch_file = zipfile.is_zipfile(path) or head == b'\x80'
        if not (is_torch_file and str(error).startswith('Weights only load failed')):
            raise not_a_checkpoint(path, error) from None
        origin = f'{source} (cached at {path})' if source else path
        raise RuntimeError(
            f'{origin} holds more than tensors, so it is not loaded from a URL (unpickling it '
            'could run arbitrary code). If you trust it, load the local file instead: '
            f'load_from={path!r}. torch.load said: {str(error).splitlines()[0]}') from None
    except UNREADABLE_CHECKPOINT as error:
        raise not_a_checkpoint(path, error) from None


def load_from_http_cached(filename: str, map_location=None):
    """mmengine checkpoint loader for ``http(s)://`` URLs (see the module docstring)."""
    rank, world_size = get_dist_info()
    path = url_cache_path(filename)
    if rank == 0:
        download(filename, path, progress=os.isatty(2))
    if world_size > 1:
        barrier()
        if rank > 0:  # a node without the shared cache downloads its own copy
            download(filename, path)
    return load_checkpoint_file(path, map_location, source=filename)


def register_checkpoint_loaders() -> None:
    """Register the URL loader with mmengine's ``CheckpointLoader`` (idempotent)."""
    CheckpointLoader.register_scheme(URL_SCHEME, load_from_http_cached, force=True)


register_checkpoint_loaders()

__all__ = ['cache_root', 'url_cache_path', 'download', 'load_checkpoint_file',
           'not_a_checkpoint', 'UNREADABLE_CHECKPOINT',
           'load_from_http_cached', 'register_checkpoint_loaders']
