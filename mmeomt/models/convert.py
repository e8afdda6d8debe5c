"""Whole-model EoMT checkpoints -> :class:`~mmeomt.models.eomt.EoMT` keys.

Two published layouts besides ours:

* ``'authors'``: the released ``pytorch_model.bin`` files of tue-mps/eomt (Lightning module
  state): ``network.encoder.backbone.*`` (a timm ViT), ``network.q.weight``,
  ``network.class_head.*``, ``network.mask_head.{0,2,4}.*``,
  ``network.upscale.{i}.{conv1,conv2,norm}.*``, ``network.attn_mask_probs``; the pixel
  mean/std buffers (our data preprocessor normalises) and ``criterion.empty_weight`` are dropped.
* ``'transformers'``: ``EomtForUniversalSegmentation``: ``embeddings.*``, ``layers.N.*``,
  ``layernorm.*``, ``query.weight``, ``class_predictor.*``, ``mask_head.fc{1,2,3}.*``,
  ``upscale_block.block.{i}.{conv1,conv2,layernorm2d}.*``, ``attn_mask_probs``,
  ``criterion.empty_weight`` (dropped).

The ViT part goes through :func:`~mmeomt.models.backbones.convert.convert_dinov2`; its position
grid is kept, and resized on load if the model is built for another crop (``EoMTViT``'s
pre-hook).
"""
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from torch import Tensor

from mmeomt.utils.checkpoint_io import atomic_torch_save
from mmeomt.utils.hub import load_checkpoint_file
from .backbones.convert import convert_dinov2

StateDict = Dict[str, Tensor]

EOMT_FORMATS = ('mmeomt', 'authors', 'transformers')

_AUTHORS_BACKBONE = 'network.encoder.backbone.'
_HF_BACKBONE = re.compile(r'^(embeddings|layers|layernorm)\.')

# (regex, replacement; None = dropped) for everything but the ViT.
_HEAD_RULES: Dict[str, List[Tuple[str, object]]] = {
    'authors': [
        (r'^network\.q\.weight$', 'queries.weight'),
        (r'^network\.(class_head|mask_head\.[024])\.(weight|bias)$', r'\1.\2'),
        (r'^network\.upscale\.(\d+)\.(conv1|conv2|norm)\.(weight|bias)$', r'upscale.\1.\2.\3'),
        (r'^network\.attn_mask_probs$', 'attn_mask_probs'),
        (r'^network\.encoder\.pixel_(mean|std)$', None),  # the data preprocessor normalises
        (r'^criterion\.', None),  # the loss's no-object weight
    ],
    'transformers': [
        (r'^query\.weight$', 'queries.weight'),
        (r'^class_predictor\.(weight|bias)$', r'class_head.\1'),
        (r'^mask_head\.fc([123])\.(weight|bias)$',
         lambda m: f'mask_head.{2 * (int(m.group(1)) - 1)}.{m.group(2)}'),
        (r'^upscale_block\.block\.(\d+)\.(conv1|conv2)\.(weight|bias)$', r'upscale.\1.\2.\3'),
        (r'^upscale_block\.block\.(\d+)\.layernorm2d\.(weight|bias)$', r'upscale.\1.norm.\2'),
        (r'^attn_mask_probs$', 'attn_mask_probs'),
        (r'^criterion\.', None),
    ],
}


def _clean(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Drop torch.compile's ``_orig_mod`` from key names (the authors strip it too on save)."""
    return {k.replace('._orig_mod', '').replace('_orig_mod.', ''): v
            for k, v in state_dict.items()}


def _sample(keys, n: int = 8) -> str:
    keys = list(keys)
    more = f', ... ({len(keys)} in all)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def _mmeomt_prefix(state_dict: Mapping[str, Tensor]) -> str:
    """The prefix of an mmeomt EoMT core (``''`` or e.g. ``'eomt.'``), or raise KeyError."""
    for key in state_dict:
        if key.endswith('queries.weight'):
            prefix = key[:-len('queries.weight')]
            if (prefix == '' or prefix.endswith('.')) and any(
                    k.startswith(prefix + 'backbone.') for k in state_dict):
                return prefix
    raise KeyError('no mmeomt EoMT core')


def detect_eomt_checkpoint_format(state_dict: Mapping[str, Tensor]) -> str:
    """Tell which layout an EoMT state dict is in.

    Returns:
        ``'mmeomt'`` (keys ``[prefix.]queries.weight``, ``[prefix.]backbone.*``),
        ``'authors'`` or ``'transformers'`` (see the module docstring).

    Raises:
        ValueError: none of them, with sample keys.
    """
    keys = _clean(state_dict)
    if 'network.q.weight' in keys or any(k.startswith(_AUTHORS_BACKBONE) for k in keys):
        return 'authors'
    if 'query.weight' in keys and 'class_predictor.weight' in keys:
        return 'transformers'
    try:
        _mmeomt_prefix(keys)
        return 'mmeomt'
    except KeyError:
        pass
    raise ValueError(
        'Unrecognised EoMT checkpoint: expected the authors\' keys (network.q.weight, '
        'network.encoder.backbone.*), transformers EomtForUniversalSegmentation keys '
        '(query.weight, class_predictor.*, embeddings.*, layers.N.*) or mmeomt keys '
        f'([eomt.]queries.weight, [eomt.]backbone.*); got {len(keys)} keys such as '
        f'{_sample(keys)}')


def convert_eomt_checkpoint(state_dict: Mapping[str, Tensor], prefix: str = '') -> StateDict:
    """Convert an EoMT state dict to the keys of an ``EoMT`` core mounted at ``prefix``.

    Args:
        state_dict: in any format of :data:`EOMT_FORMATS` (a bare state dict; unwrap
            ``checkpoint['state_dict']`` first).
        prefix: where the core sits in the model being loaded: ``''`` for ``EoMT`` itself,
            ``'eomt.'`` for ``EoMTDetector`` / ``EoMTSegmentor``.

    Returns:
        a new state dict: ``{prefix}backbone.*``, ``{prefix}queries.weight``,
        ``{prefix}class_head.*``, ``{prefix}mask_head.{0,2,4}.*``,
        ``{prefix}upscale.{i}.{conv1,conv2,norm}.*``, ``{prefix}attn_mask_probs``.

    Raises:
        ValueError: unknown format, or keys of a known format that EoMT has no place for.
    """
    if prefix and not prefix.endswith('.'):
        raise ValueError(f"convert_eomt_checkpoint: prefix must be '' or end with '.', "
                         f'got {prefix!r}')
    state_dict = _clean(state_dict)
    fmt = detect_eomt_checkpoint_format(state_dict)
    if fmt == 'mmeomt':
        src = _mmeomt_prefix(state_dict)
        return {prefix + k[len(src):]: v for k, v in state_dict.items() if k.startswith(src)}

    if fmt == 'authors':
        backbone = {k: v for k, v in state_dict.items() if k.startswith(_AUTHORS_BACKBONE)}
    else:
        backbone = {k: v for k, v in state_dict.items() if _HF_BACKBONE.match(k)}
    out = {f'{prefix}backbone.{k}': v for k, v in convert_dinov2(backbone).items()}

    rules = [(re.compile(p), r) for p, r in _HEAD_RULES[fmt]]
    unknown = []
    for key, value in state_dict.items():
        if key in backbone:
            continue
        for pattern, repl in rules:
            if pattern.search(key):
                if repl is not None:
                    out[prefix + pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'EoMT checkpoint in {fmt} format has keys EoMT has no place for: '
                         f'{_sample(unknown)}')
    return out


# ------------------------------------------------------------------------------------------
# Checkpoint files (used by tools/model_converters)
# ------------------------------------------------------------------------------------------
def read_state_dict(path: str) -> StateDict:
    """The state dict in a checkpoint file.

    ``.safetensors`` files are read as they are; anything else with ``torch.load`` (tensors
    only), unwrapping ``state_dict`` (mmengine, Lightning), ``model`` or ``module``.

    Raises:
        FileNotFoundError / ValueError: no such file, or no state dict inside.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    checkpoint = load_checkpoint_file(path, map_location='cpu')
    for key in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping) or not all(
            isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError(f'{path}: expected a state dict (name -> tensor), possibly under '
                         "'state_dict', 'model' or 'module'")
    return dict(checkpoint)


def write_checkpoint(path: str, state_dict: Mapping[str, Tensor],
                     meta: Optional[Dict[str, Any]] = None) -> None:
    """Save ``{'state_dict': ..., 'meta': ...}`` (mmengine's layout) atomically, so ``path`` is
    never half written."""
    atomic_torch_save({'state_dict': dict(state_dict), 'meta': dict(meta or {})}, path)


__all__ = ['EOMT_FORMATS', 'convert_eomt_checkpoint', 'detect_eomt_checkpoint_format',
           'read_state_dict', 'write_checkpoint']
