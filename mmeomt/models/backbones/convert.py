"""DINOv2 weights for :class:`~mmeomt.models.backbones.vit.EoMTViT`, from any of the usual formats.

EoMT starts from a DINOv2 ViT with 4 registers (patch 14, a 37x37 position grid) and runs it with
patch 16 at the training crop.  This module renames the weights of each published layout to
ours and fits them to the model:

* **formats**, recognised by their key names (under any common key prefix, e.g. ``backbone.``,
  ``dinov2.``, ``model.``, ``network.encoder.backbone.``):

  ========================  ==============================================================
  ``'mmeomt'``              ours: ``patch_embed.projection``, ``layers.N.ln1``,
                            ``register_tokens``, ``pos_embed`` of patch tokens only
  ``'mmpretrain'``          mmpretrain's DINOv2: our names, no registers, ``pos_embed``
                            with a [CLS] position
  ``'timm'``                timm ``vit_*_patch14_reg4_dinov2`` (and the authors' EoMT
                            encoder): ``patch_embed.proj``, ``blocks.N.norm1``,
                            ``ls1.gamma``, ``mlp.fc1`` (packed SwiGLU for giant),
                            ``reg_token``, ``norm``
  ``'dinov2'``              the original DINOv2 release: timm-like blocks, ``mlp.w12/w3``,
                            ``register_tokens``, ``mask_token``, ``pos_embed`` with [CLS]
  ``'transformers'``        ``Dinov2(WithRegisters)Model`` (``embeddings.*``,
                            ``encoder.layer.N.*`` with separate query/key/value,
                            ``layer_scale1.lambda1``, ``layernorm``) and the ViT part of
                            ``EomtForUniversalSegmentation`` (``layers.N.attention.q_proj``)
  ========================  ==============================================================

* **fitting**: a [CLS] position embedding is folded into ``cls_token`` (EoMT embeds positions of
  patch tokens only, so the sum is what the [CLS] token sees); the patch-embedding kernel is
  resampled with FlexiViT's pseudo-inverse resize and the position grid bicubically, both as
  timm 1.0.31 does by default when it builds ``img_size=..., patch_size=16`` from DINOv2
  (bicubic, ``antialias=True``, ``align_corners=False``).

:func:`adapt_vit_state` runs all of this on load (``EoMTViT`` calls it from a
``load_state_dict`` pre-hook), so ``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts
every format; :func:`convert_dinov2` is the same for tools.
"""
import math
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

StateDict = Dict[str, Tensor]
Target = Union[nn.Module, Mapping, None]

DINOV2_FORMATS = ('mmeomt', 'mmpretrain', 'timm', 'dinov2', 'transformers')

# The patch-embedding kernel names the layout family; the prefix before it is the common prefix.
_ANCHORS = {
    'patch_embed.projection.weight': 'mmpretrain',
    'patch_embed.proj.weight': 'timm',
    'embeddings.patch_embeddings.projection.weight': 'transformers',
}

# Placeholders resolved after renaming: timm's ``mlp.fc1/fc2`` is a plain MLP or a packed SwiGLU
# (giant), told apart by shape; transformers keeps query/key/value apart, we fuse them.
_MLP_IN, _MLP_OUT = 'ffn.<in>', 'ffn.<out>'
_L = r'(?:blocks|layers|encoder\.layer)\.(\d+)\.'  # a block index in any of the layouts
# Every key of an EoMTViT (mmpretrain's DINOv2 uses the same names).
_OURS = (r'^(?:cls_token|register_tokens|pos_embed|(?:patch_embed\.projection|ln1'
         r'|layers\.\d+\.(?:ln[12]|attn\.(?:qkv|proj|gamma1)'
         r'|ffn\.(?:layers\.0\.0|layers\.1|w12|w3|gamma2)))\.(?:weight|bias))$')

_RULES: Dict[str, List[Tuple[str, Optional[str]]]] = {
    # (regex on the key without prefix, replacement; None = not part of the ViT, dropped)
    # Our own layout: unknown keys pass through, to be reported by load_state_dict as usual.
    'mmeomt': [(r'^(.*)$', r'\1')],
    'mmpretrain': [
        (r'^mask_token$', None),
        (_OURS, r'\g<0>'),
    ],
    'timm': [
        (r'^(cls_token|pos_embed)$', r'\1'),
        (r'^(?:reg_token|register_tokens)$', 'register_tokens'),
        (r'^mask_token$', None),
        (r'^head\.', None),
        (r'^patch_embed\.proj\.(weight|bias)$', r'patch_embed.projection.\1'),
        (_L + r'norm([12])\.(weight|bias)$', r'layers.\1.ln\2.\3'),
        (_L + r'attn\.(qkv|proj)\.(weight|bias)$', r'layers.\1.attn.\2.\3'),
        (_L + r'ls1\.gamma$', r'layers.\1.attn.gamma1.weight'),
        (_L + r'ls2\.gamma$', r'layers.\1.ffn.gamma2.weight'),
        (_L + r'mlp\.(w12|w3)\.(weight|bias)$', r'layers.\1.ffn.\2.\3'),
        (_L + r'mlp\.fc1\.(weight|bias)$', r'layers.\1.' + _MLP_IN + r'.\2'),
        (_L + r'mlp\.fc2\.(weight|bias)$', r'layers.\1.' + _MLP_OUT + r'.\2'),
        (r'^norm\.(weight|bias)$', r'ln1.\1'),
    ],
    'transformers': [
        (r'^embeddings\.(cls_token|register_tokens)$', r'\1'),
        (r'^embeddings\.position_embeddings(?:\.weight)?$', 'pos_embed'),
        (r'^embeddings\.mask_token$', None),
        (r'^embeddings\.patch_embeddings\.projection\.(weight|bias)$',
         r'patch_embed.projection.\1'),
        (_L + r'norm([12])\.(weight|bias)$', r'layers.\1.ln\2.\3'),
        (_L + r'attention\.attention\.(query|key|value)\.(weight|bias)$',
         r'layers.\1.attn.<\2>.\3'),
        (_L + r'attention\.([qkv])_proj\.(weight|bias)$', r'layers.\1.attn.<\2>.\3'),
        (_L + r'attention\.(?:output\.dense|out_proj)\.(weight|bias)$',
         r'layers.\1.attn.proj.\2'),
        (_L + r'layer_scale1\.lambda1$', r'layers.\1.attn.gamma1.weight'),
        (_L + r'layer_scale2\.lambda1$', r'layers.\1.ffn.gamma2.weight'),
        (_L + r'mlp\.fc1\.(weight|bias)$', r'layers.\1.ffn.layers.0.0.\2'),
        (_L + r'mlp\.fc2\.(weight|bias)$', r'layers.\1.ffn.layers.1.\2'),
        (_L + r'mlp\.weights_in\.(weight|bias)$', r'layers.\1.ffn.w12.\2'),
        (_L + r'mlp\.weights_out\.(weight|bias)$', r'layers.\1.ffn.w3.\2'),
        (r'^layernorm\.(weight|bias)$', r'ln1.\1'),
        # The rest of an ``EomtForUniversalSegmentation`` (see mmeomt.models.convert).
        (r'^(?:query|class_predictor|mask_head|upscale_block|criterion)\.', None),
        (r'^attn_mask_probs$', None),
    ],
}
_RULES['dinov2'] = _RULES['timm']


# ------------------------------------------------------------------------------------------
# Resampling
# ------------------------------------------------------------------------------------------
def resample_patch_embed(weight: Tensor, new_size: Sequence[int]) -> Tensor:
    """Resize patch-embedding kernels so that patchifying a resized image gives the same tokens.

    FlexiViT (Beyer et al., CVPR 2023): with ``B`` the bicubic (antialiased) resize of a
    ``(h, w)`` patch to ``new_size``, the new kernel ``w'`` should satisfy
    ``<B x, w'> = <x, w>`` for every patch ``x``, i.e. ``B^T w' = w``; we take the least-norm
    solution ``w' = pinv(B^T) w``.  Same result as timm's ``resample_patch_embed`` defaults.

    Args:
        weight: kernels ``(D, C, h, w)``.
        new_size: ``(h', w')``.

    Returns:
        ``(D, C, h', w')``, in the dtype of ``weight``.
    """
    if weight.dim() != 4:
        raise ValueError(f'resample_patch_embed: weight must be (D, C, h, w), got shape '
                         f'{tuple(weight.shape)}')
    old_size, new_size = tuple(weight.shape[-2:]), tuple(int(s) for s in new_size)
    if old_size == new_size:
        return weight
    num_old = old_size[0] * old_size[1]
    # Column j of B is the resized j-th basis patch; float64 keeps the pseudo-inverse accurate.
    basis = torch.eye(num_old, dtype=torch.float64, device=weight.device)
    resized = F.interpolate(basis.reshape(num_old, 1, *old_size), size=new_size, mode='bicubic',
                            antialias=True, align_corners=False)
    resize_op = resized.reshape(num_old, -1).T  # B: (h'w', hw)
    kernels = weight.reshape(-1, num_old).to(torch.float64)  # rows are w^T
    new = kernels @ torch.linalg.pinv(resize_op)  # w'^T = w^T pinv(B)
    return new.reshape(*weight.shape[:2], *new_size).to(weight.dtype)


def resample_pos_embed(pos_embed: Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                       mode: str = 'bicubic') -> Tensor:
    """Resize the position embeddings of patch tokens to another grid.

    As timm's ``resample_abs_pos_embed`` defaults (bicubic, ``antialias=True``,
    ``align_corners=False``, computed in float32), which timm uses both on load and for
    ``dynamic_img_size`` inputs.

    Args:
        pos_embed: ``(1, h * w, D)``, row-major over the ``(h, w)`` grid.
        old_grid: ``(h, w)``.
        new_grid: ``(h', w')``.
        mode: ``F.interpolate`` mode; antialiased where torch supports it (bilinear, bicubic).

    Returns:
        ``(1, h' * w', D)`` in the dtype of ``pos_embed``.
    """
    old_grid, new_grid = tuple(int(s) for s in old_grid), tuple(int(s) for s in new_grid)
    if pos_embed.dim() != 3 or pos_embed.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(f'resample_pos_embed: expected pos_embed (1, {old_grid[0]}*'
                         f'{old_grid[1]}, D), got {tuple(pos_embed.shape)}')
    if old_grid == new_grid:
        return pos_embed
    dims = pos_embed.shape[-1]
    grid = pos_embed.float().reshape(1, *old_grid, dims).permute(0, 3, 1, 2)
    smooth = mode in ('bilinear', 'bicubic')
    grid = F.interpolate(grid, size=new_grid, mode=mode, antialias=smooth,
                         align_corners=False if smooth else None)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, dims).to(pos_embed.dtype)


# ------------------------------------------------------------------------------------------
# Format detection and renaming
# ------------------------------------------------------------------------------------------
def _sample(keys, n: int = 8) -> str:
    keys = list(keys)
    more = f', ... ({len(keys)} in all)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def detect_dinov2_format(state_dict: Mapping[str, Tensor]) -> Tuple[str, str]:
    """Find the layout of a DINOv2 state dict and the common prefix of its ViT keys.

    Args:
        state_dict: a ViT state dict, possibly inside a bigger model's (``backbone.``,
            ``dinov2.``, ``network.encoder.backbone.``...).

    Returns:
        ``(format, prefix)``: format is one of :data:`DINOV2_FORMATS`; prefix is ``''`` or
        ends with ``'.'``.

    Raises:
        ValueError: no patch-embedding kernel of a known layout, or several ViTs.
    """
    found = {}
    for key in state_dict:
        for anchor, family in _ANCHORS.items():
            if key.endswith(anchor):
                prefix = key[:-len(anchor)]
                if prefix == '' or prefix.endswith('.'):
                    found[prefix] = family
    if not found:
        raise ValueError(
            'Unrecognised DINOv2 checkpoint: expected a patch-embedding kernel named one of '
            f'{sorted(_ANCHORS)} (mmpretrain/mmeomt, timm/DINOv2, transformers), possibly '
            f'under a common prefix; got keys {_sample(state_dict)}')
    if len(found) > 1:
        raise ValueError('Ambiguous DINOv2 checkpoint: it holds several ViTs, under the prefixes '
                         f'{sorted(found)}; select one (e.g. with mmengine PretrainedInit '
                         "'prefix') before loading")
    (prefix, family), = found.items()
    if family == 'mmpretrain':
        # mmpretrain's DINOv2 has no registers and 1 + h*w positions ([CLS] first); ours
        # (possibly converted from such a checkpoint, hence without registers) has h*w, a
        # square for every grid DINOv2 was trained on.
        pos = state_dict.get(prefix + 'pos_embed')
        ours = prefix + 'register_tokens' in state_dict or (
            pos is not None and math.isqrt(pos.shape[-2])**2 == pos.shape[-2])
        return ('mmeomt' if ours else 'mmpretrain'), prefix
    if family == 'timm' and (prefix + 'mask_token' in state_dict
                             or prefix + 'register_tokens' in state_dict):
        return 'dinov2', prefix
    return family, prefix


def _rename(state_dict: StateDict, fmt: str) -> StateDict:
    """Rename keys (no prefix) of ``fmt`` to ours; raise on keys no rule knows."""
    out, unknown = {}, []
    rules = [(re.compile(pattern), repl) for pattern, repl in _RULES[fmt]]
    for key, value in state_dict.items():
        key = key.replace('_orig_mod.', '')  # torch.compile wrappers
        for pattern, repl in rules:
            if pattern.search(key):
                if repl is not None:
                    out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'DINOv2 checkpoint in {fmt} format has keys that are not part of a '
                         f'DINOv2 ViT: {_sample(unknown)}')
    _fuse_qkv(out)
    _resolve_mlp(out)
    return out


def _fuse_qkv(sd: StateDict) -> None:
    """``layers.N.attn.<query|q>`` etc. -> one ``layers.N.attn.qkv`` in q, k, v order."""
    names = (('<query>', '<key>', '<value>'), ('<q>', '<k>', '<v>'))
    for key in [k for k in sd if '.attn.<query>.' in k or '.attn.<q>.' in k]:
        parts = names[0] if '.attn.<query>.' in key else names[1]
        keys = [key.replace(parts[0], part) for part in parts]
        missing = [k for k in keys if k not in sd]
        if missing:
            raise ValueError(f'DINOv2 checkpoint: {key} comes without {missing} (query, key and '
                             'value are fused into one qkv projection)')
        sd[key.replace(parts[0], 'qkv')] = torch.cat([sd.pop(k) for k in keys], dim=0)


def _resolve_mlp(sd: StateDict) -> None:
    """timm ``mlp.fc1/fc2``: a plain MLP (GELU) or, when fc1 is twice as wide as fc2's input,
    the packed SwiGLU of DINOv2-giant (``silu(x1) * x2`` over fc1's two halves, as ours)."""
    for key in [k for k in sd if f'.{_MLP_IN}.weight' in k]:
        block = key[:-len(f'{_MLP_IN}.weight')]
        w_in, w_out = sd[key], sd.get(f'{block}{_MLP_OUT}.weight')
        swiglu = w_out is not None and w_in.shape[0] == 2 * w_out.shape[1]
        names = ('w12', 'w3') if swiglu else ('layers.0.0', 'layers.1')
        for placeholder, name in zip((_MLP_IN, _MLP_OUT), names):
            for param in ('weight', 'bias'):
                old = f'{block}{placeholder}.{param}'
                if old in sd:
                    sd[f'{block}ffn.{name}.{param}'] = sd.pop(old)
    leftover = [k for k in sd if _MLP_OUT in k]
    if leftover:
        raise ValueError(f'DINOv2 checkpoint: {leftover} come without their mlp.fc1')


def _has_cls_position(fmt: str, sd: StateDict, pos: Tensor) -> bool:
    """Whether the checkpoint's position embedding ``pos`` starts with the [CLS] position."""
    if fmt in ('mmpretrain', 'dinov2'):
        return 'cls_token' in sd
    if fmt == 'timm':
        # timm's reg4 DINOv2 models are ``no_embed_class``; class-token ViTs without
        # registers (e.g. ``vit_*_patch14_dinov2``) embed the [CLS] position.
        return 'register_tokens' not in sd and 'cls_token' in sd
    if fmt == 'transformers':
        # Dinov2 keeps (1, 1 + N, D) with [CLS]; Eomt an nn.Embedding (N, D) of patches.
        return pos.dim() == 3
    return False


# ------------------------------------------------------------------------------------------
# Fitting to a model
# ------------------------------------------------------------------------------------------
def _target_geometry(target: Target) -> Tuple[Optional[Tuple[int, int]],
                                               Optional[Tuple[int, int]]]:
    """``(patch kernel size, position grid)`` wanted by ``target`` (None = keep)."""
    if target is None:
        return None, None
    if isinstance(target, nn.Module):
        kernel = getattr(getattr(target, 'patch_embed', None), 'projection', None)
        grid = getattr(target, 'patch_resolution', None)
        if kernel is None or grid is None:
            raise TypeError(f'convert_dinov2: target must be an EoMTViT (patch_embed.projection '
                            f'and patch_resolution), got {type(target).__name__}')
        return tuple(kernel.weight.shape[-2:]), tuple(int(g) for g in grid)
    if isinstance(target, Mapping):
        unknown = set(target) - {'patch_size', 'img_size', 'grid'}
        if unknown:
            raise KeyError(f'convert_dinov2: target dict takes patch_size, img_size and grid, '
                           f'got {sorted(unknown)}')

        def pair(v):
            return (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(x) for x in v)

        patch = pair(target['patch_size']) if target.get('patch_size') is not None else None
        grid = pair(target['grid']) if target.get('grid') is not None else None
        if target.get('img_size') is not None:
            if patch is None or grid is not None:
                raise KeyError('convert_dinov2: img_size needs patch_size and excludes grid')
            img = pair(target['img_size'])
            # ceil, as the model's patch embedding pads inputs to a multiple of the patch
            grid = tuple(math.ceil(i / p) for i, p in zip(img, patch))
        return patch, grid
    raise TypeError('convert_dinov2: target must be an EoMTViT, a dict with patch_size / '
                    f'img_size / grid, or None; got {type(target).__name__}')


def _source_grid(num_patches: int, target_grid: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    if target_grid is not None and target_grid[0] * target_grid[1] == num_patches:
        return target_grid
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f'DINOv2 checkpoint: cannot tell the grid of its {num_patches} '
                         'patch position embeddings (not a square, nor the target grid '
                         f'{target_grid})')
    return side, side


def _fit(sd: StateDict, fmt: str, target: Target) -> StateDict:
    patch, grid = _target_geometry(target)
    kernel = sd.get('patch_embed.projection.weight')
    if patch is not None and kernel is not None:
        sd['patch_embed.projection.weight'] = resample_patch_embed(kernel, patch)
    pos = sd.get('pos_embed')
    if pos is None:
        return sd
    has_cls = _has_cls_position(fmt, sd, pos)
    if pos.dim() == 2:
        pos = pos[None]
    if has_cls:
        if 'cls_token' not in sd:
            raise ValueError('DINOv2 checkpoint: pos_embed holds a [CLS] position but there is '
                             'no cls_token to fold it into')
        sd['cls_token'] = sd['cls_token'] + pos[:, :1]
        pos = pos[:, 1:]
    if grid is not None:
        pos = resample_pos_embed(pos, _source_grid(pos.shape[1], grid), grid)
    sd['pos_embed'] = pos
    return sd


def convert_dinov2(state_dict: Mapping[str, Tensor], target: Target = None) -> StateDict:
    """Convert DINOv2 weights in any known layout to :class:`EoMTViT` keys.

    Args:
        state_dict: the checkpoint's state dict (keys may share a prefix; keys outside the
            ViT's prefix, e.g. a classifier head, are dropped).
        target: what to fit to: an ``EoMTViT`` (its patch size and position grid), a dict with
            ``patch_size`` and ``img_size`` or ``grid``, or None to keep the checkpoint's
            kernel and grid (a [CLS] position is folded into ``cls_token`` in every case).

    Returns:
        a new state dict with our key names and no prefix.

    Raises:
        ValueError: unknown layout, or keys of a known layout that are not part of the ViT.
    """
    fmt, prefix = detect_dinov2_format(state_dict)
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return _fit(_rename(sd, fmt), fmt, target)


def adapt_vit_state(model: nn.Module, state_dict: dict, prefix: str) -> None:
    """Make the keys of ``state_dict`` under ``prefix`` fit ``model`` (an ``EoMTViT``), in place.

    Runs as ``EoMTViT``'s ``load_state_dict`` pre-hook, so it sees the whole state dict being
    loaded into the model that holds the ViT at ``prefix``: keys elsewhere are left alone.

    * Our own keys are left as they are, except that a ``pos_embed`` of another grid (e.g. a
      640-crop checkpoint loaded at 1280) is resized to the model's.
    * Other layouts (see :func:`convert_dinov2`) are converted and fitted.
    * Keys of no known layout raise ``ValueError`` unless they are all our own names.
    """
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not keys:
        return
    local = {k[len(prefix):]: state_dict[k] for k in keys}
    try:
        fmt, inner = detect_dinov2_format(local)
    except ValueError as error:
        ours = set(model.state_dict(keep_vars=True))
        unknown = [k for k in local if k not in ours]
        if unknown:
            raise ValueError(f'{type(model).__name__}: cannot load keys {_sample(unknown)} '
                             f'(under prefix {prefix!r}): {error}') from None
        return  # a partial state dict in our names
    if fmt == 'mmeomt' and not inner and _fits(model, local):
        return  # the common case (resuming, whole-model checkpoints): nothing to do
    try:
        converted = convert_dinov2(local, target=model)
    except ValueError as error:
        raise ValueError(f'{type(model).__name__} (prefix {prefix!r}): {error}') from None
    for key in keys:
        del state_dict[key]
    state_dict.update((prefix + k, v) for k, v in converted.items())


def _fits(model: nn.Module, sd: Mapping[str, Tensor]) -> bool:
    """Whether our-format weights already have the model's kernel and position-grid shapes."""
    wanted = {'patch_embed.projection.weight': model.patch_embed.projection.weight,
              'pos_embed': model.pos_embed}
    return all(sd[k].shape == v.shape for k, v in wanted.items() if k in sd)


__all__ = ['DINOV2_FORMATS', 'adapt_vit_state', 'convert_dinov2', 'detect_dinov2_format',
           'resample_patch_embed', 'resample_pos_embed']
