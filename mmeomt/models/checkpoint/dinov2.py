"""DINOv2 ViT weights in each published layout: the ``'backbone'`` entries of the format table.

EoMT starts from a DINOv2 ViT with 4 registers (patch 14, a 37x37 position grid) and runs it with
patch 16 at the training crop (docs/method.md §1).  Recognised by their key names, under any
common key prefix (``backbone.``, ``dinov2.``, ``model.``, ``network.encoder.backbone.``...):

========================  ==============================================================
``'mmeomt'``              ours: ``patch_embed.projection``, ``layers.N.ln1``,
                          ``register_tokens``, ``pos_embed`` of patch tokens only
``'mmpretrain'``          mmpretrain's DINOv2: our names, no registers, ``pos_embed``
                          with a [CLS] position
``'dinov2'``              the original DINOv2 release: timm-like blocks, ``mlp.w12/w3``,
                          ``register_tokens``, ``mask_token``, ``pos_embed`` with [CLS]
``'timm'``                timm ``vit_*_patch14_reg4_dinov2`` (and the authors' EoMT
                          encoder): ``patch_embed.proj``, ``blocks.N.norm1``,
                          ``ls1.gamma``, ``mlp.fc1`` (packed SwiGLU for giant),
                          ``reg_token``, ``norm``
``'transformers'``        ``Dinov2(WithRegisters)Model`` (``embeddings.*``,
                          ``encoder.layer.N.*`` with separate query/key/value,
                          ``layer_scale1.lambda1``, ``layernorm``) and the ViT part of
                          ``EomtForUniversalSegmentation`` (``layers.N.attention.q_proj``)
========================  ==============================================================

Fitting (:func:`fit_dinov2`, the same for every layout): a [CLS] position embedding is folded
into ``cls_token`` (EoMT embeds positions of patch tokens only, so the sum is what the [CLS]
token sees); the patch-embedding kernel is resampled with FlexiViT's pseudo-inverse resize and
the position grid bicubically, both as timm 1.0.31 does by default when it builds
``img_size=..., patch_size=16`` from DINOv2 (:mod:`mmeomt.models.backbones.resample`).
"""
import math
from functools import partial
from typing import Callable, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from mmeomt.models.backbones.resample import resample_patch_embed, resample_pos_embed
from .formats import (CheckpointFormat, Rule, StateDict, Target, convert, detect_format,
                      find_anchor, register_format)

# Placeholders resolved after renaming: timm's ``mlp.fc1/fc2`` is a plain MLP or a packed SwiGLU
# (giant), told apart by shape; transformers keeps query/key/value apart, we fuse them.
_MLP_IN, _MLP_OUT = 'ffn.<in>', 'ffn.<out>'
_L = r'(?:blocks|layers|encoder\.layer)\.(\d+)\.'  # a block index in any of the layouts
# Every key of an EoMTViT (mmpretrain's DINOv2 uses the same names).
_OURS = (r'^(?:cls_token|register_tokens|pos_embed|(?:patch_embed\.projection|ln1'
         r'|layers\.\d+\.(?:ln[12]|attn\.(?:qkv|proj|gamma1)'
         r'|ffn\.(?:layers\.0\.0|layers\.1|w12|w3|gamma2)))\.(?:weight|bias))$')

# Key rules of each layout: (regex on the key without prefix, replacement; None = not part
# of the ViT, dropped).
_MMPRETRAIN_RULES: List[Rule] = [
    (r'^mask_token$', None),
    (_OURS, r'\g<0>'),
]
_TIMM_RULES: List[Rule] = [
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
]
_TRANSFORMERS_RULES: List[Rule] = [
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
    # The rest of an ``EomtForUniversalSegmentation`` (its 'eomt' format, :mod:`.eomt`).
    (r'^(?:query|class_predictor|mask_head|upscale_block|criterion)\.', None),
    (r'^attn_mask_probs$', None),
]


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


def _target_geometry(target: Target) -> Tuple[Optional[Tuple[int, int]],
                                               Optional[Tuple[int, int]]]:
    """``(patch kernel size, position grid)`` wanted by ``target`` (None = keep)."""
    if target is None:
        return None, None
    if isinstance(target, nn.Module):
        kernel = getattr(getattr(target, 'patch_embed', None), 'projection', None)
        grid = getattr(target, 'patch_resolution', None)
        if kernel is None or grid is None:
            raise TypeError(f'fit_dinov2: target must be an EoMTViT (patch_embed.projection '
                            f'and patch_resolution), got {type(target).__name__}')
        return tuple(kernel.weight.shape[-2:]), tuple(int(g) for g in grid)
    if isinstance(target, Mapping):
        unknown = set(target) - {'patch_size', 'img_size', 'grid'}
        if unknown:
            raise KeyError(f'fit_dinov2: target dict takes patch_size, img_size and grid, '
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
    raise TypeError('fit_dinov2: target must be an EoMTViT, a dict with patch_size / '
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



def fit_dinov2(sd: StateDict, target: Target,
               cls_position: Callable[[StateDict, Tensor], bool]) -> StateDict:
    """Fit renamed DINOv2 weights to ``target``.

    Args:
        sd: weights with our key names (modified and returned).
        target: an ``EoMTViT`` (its patch size and position grid), a dict with ``patch_size``
            and ``img_size`` or ``grid``, or None to keep the checkpoint's kernel and grid.
        cls_position: whether the layout's ``pos_embed`` starts with a [CLS] position,
            which is folded into ``cls_token`` in every case.
    """
    patch, grid = _target_geometry(target)
    kernel = sd.get('patch_embed.projection.weight')
    if patch is not None and kernel is not None:
        sd['patch_embed.projection.weight'] = resample_patch_embed(kernel, patch)
    pos = sd.get('pos_embed')
    if pos is None:
        return sd
    has_cls = cls_position(sd, pos)
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


# ------------------------------------------------------------------------------------------
# The entries
# ------------------------------------------------------------------------------------------
_PATCH_OURS = 'patch_embed.projection.weight'
_PATCH_TIMM = 'patch_embed.proj.weight'
_PATCH_HF = 'embeddings.patch_embeddings.projection.weight'


def _recognise_ours(state_dict: Mapping[str, Tensor], mmeomt: bool) -> Optional[str]:
    """Our names: ours (registers, or a square patch grid) or mmpretrain's (1 + h*w)."""
    prefix = find_anchor(state_dict, _PATCH_OURS, 'DINOv2')
    if prefix is None:
        return None
    # mmpretrain's DINOv2 has no registers and 1 + h*w positions ([CLS] first); ours
    # (possibly converted from such a checkpoint, hence without registers) has h*w, a
    # square for every grid DINOv2 was trained on.
    pos = state_dict.get(prefix + 'pos_embed')
    ours = prefix + 'register_tokens' in state_dict or (
        pos is not None and math.isqrt(pos.shape[-2])**2 == pos.shape[-2])
    return prefix if ours == mmeomt else None


def _recognise_timm(state_dict: Mapping[str, Tensor], original: bool) -> Optional[str]:
    """timm's names; the original release also keeps ``mask_token`` / ``register_tokens``."""
    prefix = find_anchor(state_dict, _PATCH_TIMM, 'DINOv2')
    if prefix is None:
        return None
    is_original = (prefix + 'mask_token' in state_dict
                   or prefix + 'register_tokens' in state_dict)
    return prefix if is_original == original else None


def _timm_cls_position(sd: StateDict, pos: Tensor) -> bool:
    # timm's reg4 DINOv2 models are ``no_embed_class``; class-token ViTs without registers
    # (e.g. ``vit_*_patch14_dinov2``) embed the [CLS] position.
    return 'register_tokens' not in sd and 'cls_token' in sd


register_format(CheckpointFormat(
    name='mmeomt', kind='backbone', recognise=partial(_recognise_ours, mmeomt=True),
    # Our own layout: every key passes, unknown ones to be reported by load_state_dict.
    rules=[(r'^(.*)$', r'\1')],
    fit=partial(fit_dinov2, cls_position=lambda sd, pos: False),
    description='patch_embed.projection, layers.N.ln1, register_tokens'))
register_format(CheckpointFormat(
    name='mmpretrain', kind='backbone', recognise=partial(_recognise_ours, mmeomt=False),
    rules=_MMPRETRAIN_RULES,
    fit=partial(fit_dinov2, cls_position=lambda sd, pos: 'cls_token' in sd),
    description='patch_embed.projection, no registers, pos_embed with [CLS]'))
register_format(CheckpointFormat(
    name='dinov2', kind='backbone', recognise=partial(_recognise_timm, original=True),
    rules=_TIMM_RULES, finish=(_resolve_mlp, ),
    fit=partial(fit_dinov2, cls_position=lambda sd, pos: 'cls_token' in sd),
    description='patch_embed.proj, blocks.N, mask_token, register_tokens'))
register_format(CheckpointFormat(
    name='timm', kind='backbone', recognise=partial(_recognise_timm, original=False),
    rules=_TIMM_RULES, finish=(_resolve_mlp, ),
    fit=partial(fit_dinov2, cls_position=_timm_cls_position),
    description='patch_embed.proj, blocks.N.norm1, reg_token'))
register_format(CheckpointFormat(
    name='transformers', kind='backbone',
    recognise=lambda sd: find_anchor(sd, _PATCH_HF, 'DINOv2'),
    rules=_TRANSFORMERS_RULES, finish=(_fuse_qkv, ),
    # Dinov2 keeps (1, 1 + N, D) with [CLS]; Eomt an nn.Embedding (N, D) of patches.
    fit=partial(fit_dinov2, cls_position=lambda sd, pos: pos.dim() == 3),
    description='embeddings.patch_embeddings.projection, encoder.layer.N or layers.N'))

DINOV2_FORMATS = ('mmeomt', 'mmpretrain', 'timm', 'dinov2', 'transformers')


def detect_dinov2_format(state_dict: Mapping[str, Tensor]) -> Tuple[str, str]:
    """The layout of a DINOv2 state dict and the common prefix of its ViT keys.

    Returns:
        ``(format name, prefix)``; prefix is ``''`` or ends with ``'.'``.

    Raises:
        ValueError: no patch-embedding kernel of a known layout, or several ViTs.
    """
    fmt, prefix = detect_format(state_dict, 'backbone')
    return fmt.name, prefix


def convert_dinov2(state_dict: Mapping[str, Tensor], target: Target = None) -> StateDict:
    """Convert DINOv2 weights in any known layout to :class:`EoMTViT` keys (no prefix).

    Args:
        state_dict: the checkpoint's state dict (keys may share a prefix; keys outside the
            ViT's prefix, e.g. a classifier head, are dropped).
        target: what to fit to, see :func:`fit_dinov2`.

    Raises:
        ValueError: unknown layout, or keys of a known layout that are not part of the ViT.
    """
    return convert(state_dict, 'backbone', target)[0]


__all__ = ['DINOV2_FORMATS', 'convert_dinov2', 'detect_dinov2_format', 'fit_dinov2']
