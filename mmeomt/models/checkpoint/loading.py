"""Reading checkpoint files and URLs, and loading them into a model: the loading policy.

See the package docstring for the policy.  Nothing here is registered with mmengine: our
loading paths (``EoMTRunner``'s ``load_from`` / ``resume``, the ``Pretrained`` init_cfg of our
modules, the inferencers, the tools) call these functions, and mmengine's ``CheckpointLoader``
stays as it is for every other model in the process.
"""
import hashlib
import logging
import os
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, Mapping, Optional, Sequence, Tuple
from urllib.error import URLError
from urllib.parse import unquote, urlsplit

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from .hook import check_fit, reset_fit_reports

_UNSAFE = re.compile(r'[^A-Za-z0-9._+=@,-]')
_URL = re.compile(r'^https?://')

#: What ``torch.load`` raises on bytes it cannot parse (random data, truncation, a text file).
UNREADABLE_CHECKPOINT = (pickle.UnpicklingError, RuntimeError, EOFError, UnicodeDecodeError,
                         KeyError, ValueError, IndexError, TypeError, OverflowError, MemoryError,
                         zipfile.BadZipFile)


# ------------------------------------------------------------------------------------------
# URLs: one cache path per URL
# ------------------------------------------------------------------------------------------
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

    The file appears atomically: torch.hub's ``download_url_to_file`` writes a temporary file
    next to the target and renames it.

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


def cached_download(url: str) -> str:
    """:func:`download` into the per-URL cache; in a distributed run rank 0 first, the other
    ranks after a barrier (a node without the shared cache downloads its own copy)."""
    rank, world_size = get_dist_info()
    path = url_cache_path(url)
    if rank == 0:
        download(url, path, progress=os.isatty(2))
    if world_size > 1:
        barrier()
        if rank > 0:
            download(url, path)
    return path


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------
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


def is_url(filename: str) -> bool:
    return bool(_URL.match(str(filename)))


def load_checkpoint_file(filename: str, map_location=None, allow_pickle: bool = False) -> Any:
    """Read a checkpoint from a local path or an ``http(s)://`` URL (see the package docstring).

    Args:
        filename: a local file, an ``http(s)://`` URL (cached per URL) or another scheme
            mmengine's ``CheckpointLoader`` knows (``s3://``, ``open-mmlab://``...), which is
            handed to it unchanged.
        map_location: as for ``torch.load``; a safetensors file is read onto the device given
            as a string or ``torch.device`` (else the CPU).
        allow_pickle: a *local* torch file that holds more than tensors and plain containers
            (an mmengine training checkpoint: its message hub) is unpickled in full, with a
            warning, instead of refused.  Never applies to URLs.

    Raises:
        FileNotFoundError: no such local file.
        RuntimeError: a file that holds more than tensors, not allowed to be unpickled.
        ValueError: a file that is no checkpoint at all (see :func:`not_a_checkpoint`).
    """
    filename = str(filename)
    source = None
    if is_url(filename):
        source, filename, allow_pickle = filename, cached_download(filename), False
    elif '://' in filename:
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if filename.endswith('.safetensors'):
        device = map_location if isinstance(map_location, (str, torch.device)) else 'cpu'
        try:
            return load_safetensors(filename, device=str(device))
        except Exception as error:  # safetensors raises its own SafetensorError
            raise ValueError(f'{filename} is not a readable .safetensors file (truncated or '
                             f'damaged): {error}') from None
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        with open(filename, 'rb') as f:
            head = f.read(1)
        # The weights-only unpickler also refuses bytes that are no pickle at all.
        is_torch_file = zipfile.is_zipfile(filename) or head == b'\x80'
        if not (is_torch_file and str(error).startswith('Weights only load failed')):
            raise not_a_checkpoint(filename, error) from None
        refused = error
    except UNREADABLE_CHECKPOINT as error:
        raise not_a_checkpoint(filename, error) from None
    reason = str(refused).splitlines()[0]
    if source is not None:
        raise RuntimeError(
            f'{source} (cached at {filename}) holds more than tensors, so it is not loaded from '
            'a URL (unpickling it could run arbitrary code). If you trust it, load the local '
            f'file instead: load_from={filename!r}. torch.load said: {reason}') from None
    if not allow_pickle:
        raise RuntimeError(
            f'{filename} holds more than tensors (e.g. an mmengine training checkpoint), and '
            'unpickling it could run arbitrary code. If you trust it, load it with '
            'allow_pickle=True (EoMTInferencer(..., allow_pickle=True), --allow-pickle), or '
            f'keep only its weights. torch.load said: {reason}') from None
    try:
        checkpoint = torch.load(filename, map_location=map_location, weights_only=False)
    except UNREADABLE_CHECKPOINT as error:
        # Refused by the weights-only unpickler and unreadable in full: not a checkpoint.
        raise not_a_checkpoint(filename, error) from refused
    print_log(f'{filename} holds more than tensors (e.g. mmengine training state); loaded '
              'it with weights_only=False (allow_pickle), which runs its pickled code: only '
              'load checkpoints you trust.', logger='current', level=logging.WARNING)
    return checkpoint


def state_dict_of(checkpoint: Any, filename: str = 'the checkpoint') -> 'OrderedDict[str, Tensor]':
    """The state dict in a loaded checkpoint: itself, or under ``state_dict`` (mmengine,
    Lightning), ``model`` or ``module``.

    Raises:
        ValueError: no mapping of names to tensors there.
    """
    for key in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    metadata = getattr(checkpoint, '_metadata', None)
    if not isinstance(checkpoint, Mapping) or not all(
            isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError(f'{filename}: expected a state dict (name -> tensor), possibly under '
                         "'state_dict', 'model' or 'module'")
    state_dict = OrderedDict(checkpoint)
    if metadata is not None:
        state_dict._metadata = metadata
    return state_dict


# ------------------------------------------------------------------------------------------
# Into a model
# ------------------------------------------------------------------------------------------
#: mmengine's default: weights saved from a DDP-wrapped model.
DEFAULT_REVISE_KEYS: Tuple[Tuple[str, str], ...] = ((r'^module\.', ''), )


def load_checkpoint_to_model(model: nn.Module, checkpoint: Any, strict: bool = True,
                             revise_keys: Sequence[Tuple[str, str]] = DEFAULT_REVISE_KEYS,
                             filename: str = 'the checkpoint'):
    """Load a read checkpoint into ``model`` with torch's ``load_state_dict``.

    Args:
        model: the module to load (a model wrapper is unwrapped).
        checkpoint: a state dict, or a checkpoint holding one (:func:`state_dict_of`).
        strict: True raises ``ValueError`` naming every missing, unexpected and mis-shaped key
            and the checkpoint's format (:func:`~.hook.check_fit`); False loads what fits and
            logs the rest, as torch's ``strict=False`` (mis-shaped weights still raise torch's
            ``RuntimeError``).
        revise_keys: ``(pattern, replacement)`` applied to every key first, as mmengine's.
        filename: for messages.

    Returns:
        torch's ``_IncompatibleKeys``.
    """
    if is_model_wrapper(model):
        model = model.module
    state_dict = state_dict_of(checkpoint, filename)
    metadata = getattr(state_dict, '_metadata', None)  # module versions, as torch saved them
    for pattern, repl in revise_keys:
        state_dict = OrderedDict((re.sub(pattern, repl, k), v) for k, v in state_dict.items())
    if metadata is not None:
        state_dict._metadata = metadata
    reset_fit_reports(model)
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:
        if strict and 'size mismatch' in str(error):
            check_fit(model, (), (), size_error=error)
        raise
    if strict:
        check_fit(model, result.missing_keys, result.unexpected_keys)
    elif result.missing_keys or result.unexpected_keys:
        print_log(f'{filename} loaded non-strictly into {type(model).__name__}: missing keys '
                  f'{result.missing_keys}, unexpected keys {result.unexpected_keys}',
                  logger='current', level=logging.WARNING)
    return result


def load_checkpoint(model: nn.Module, filename: str, map_location='cpu', strict: bool = True,
                    allow_pickle: bool = False,
                    revise_keys: Sequence[Tuple[str, str]] = DEFAULT_REVISE_KEYS) -> Any:
    """Read ``filename`` (:func:`load_checkpoint_file`) and load it into ``model``.

    mmengine's ``load_checkpoint`` with our loading policy, strict by default.

    Returns:
        the whole checkpoint (``meta`` etc.).
    """
    checkpoint = load_checkpoint_file(filename, map_location, allow_pickle=allow_pickle)
    load_checkpoint_to_model(model, checkpoint, strict, revise_keys, filename=str(filename))
    return checkpoint


#: The keys a ``Pretrained`` init_cfg of our modules takes: mmengine's ``checkpoint``,
#: ``prefix`` and ``map_location``, and ours.
PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'strict', 'allow_pickle')


def load_pretrained(module: nn.Module, init_cfg: Mapping) -> None:
    """Load ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=None, strict=True,
    allow_pickle=False, map_location='cpu')`` into ``module``.

    ``prefix`` selects the keys under it (e.g. ``'backbone.'``) and strips it, as mmengine's
    ``PretrainedInit``; ``strict=False`` loads what fits (e.g. mmpretrain's DINOv2, which has
    no register tokens) and logs the rest.
    """
    unknown = set(init_cfg) - set(PRETRAINED_KEYS)
    if unknown or 'checkpoint' not in init_cfg:
        raise KeyError(f'{type(module).__name__}: a Pretrained init_cfg takes checkpoint '
                       f'(required) and {", ".join(PRETRAINED_KEYS[2:])}; got {dict(init_cfg)}')
    filename, prefix = init_cfg['checkpoint'], init_cfg.get('prefix')
    print_log(f'{type(module).__name__}: load {prefix or "model"} from {filename}',
              logger='current')
    checkpoint = load_checkpoint_file(filename, init_cfg.get('map_location', 'cpu'),
                                      allow_pickle=init_cfg.get('allow_pickle', False))
    state_dict = state_dict_of(checkpoint, filename)
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state_dict = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                                 if k.startswith(prefix))
        if not state_dict:
            raise ValueError(f'{filename}: no keys under the prefix {prefix!r}')
    load_checkpoint_to_model(module, state_dict, init_cfg.get('strict', True),
                             filename=str(filename))


__all__ = ['UNREADABLE_CHECKPOINT', 'cache_root', 'cached_download', 'checkpoint_problem',
           'download', 'is_url', 'load_checkpoint', 'load_checkpoint_file',
           'load_checkpoint_to_model', 'load_pretrained', 'not_a_checkpoint', 'state_dict_of',
           'url_cache_path']
