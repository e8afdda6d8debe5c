"""DINOv3 weights for :class:`~mmeomt.models.backbones.dinov3.DINOv3ViT`, and whole EoMT-DINOv3
checkpoints, from the published layouts: the DINOv3 entries of the format table.

The key maps are pure functions (state dict in, state dict out: :func:`convert_dinov3`,
:func:`convert_eomt_dinov3_checkpoint`); the entries registered at the end of this module
(``'dinov3-*'`` of kind ``'backbone'``, before the DINOv2 ones that share anchors with them,
and ``'authors-dinov3'`` / ``'transformers-dinov3'`` of kind ``'eomt'``) run them on load.

* **backbone formats**, recognised by the name of the patch-embedding kernel (under any common
  prefix):

  =================  ======================================================================
  ``'mmeomt'``       ours: ``patch_embed.projection``, ``layers.N.attn.{qkv,q_bias,v_bias}``
  ``'transformers'`` ``DINOv3ViTModel``: ``embeddings.patch_embeddings``, blocks under
                     ``layer.N`` (4.x), ``model.layer.N`` (5.x) or ``layers.N``
                     (``EomtDinov3ForUniversalSegmentation``), ``attention.{q,k,v,o}_proj``,
                     ``layer_scale{1,2}.lambda1``, ``mlp.{up,down,gate}_proj``, ``norm`` or
                     ``layernorm``
  ``'authors'``      the backbone inside the authors' EoMT-DINOv3 checkpoints
                     (``network.encoder.backbone.``): transformers' modules re-attached as
                     ``patch_embed.{cls_token,register_tokens,patch_embeddings}`` and
                     ``blocks.N``
  ``'timm'``         timm ``vit_*_patch16_dinov3[_qkvb]`` (``eva.py``): ``reg_token``,
                     ``patch_embed.proj``, ``blocks.N.attn.{qkv,q_bias,v_bias}``,
                     ``gamma_{1,2}``, ``mlp.fc1/fc2`` or ``mlp.fc1_g/fc1_x/fc2``
  ``'dinov3'``       the original release (facebookresearch/dinov3): ``storage_tokens``,
                     ``blocks.N.attn.qkv.{weight,bias,bias_mask}``, ``ls{1,2}.gamma``,
                     ``mlp.fc1/fc2`` or ``mlp.w1/w2/w3``, ``rope_embed.periods``
  =================  ======================================================================

  DINOv3 has no key bias: the original release stores one in ``qkv.bias`` but masks it to 0
  (``bias_mask``), timm keeps zeros in a buffer; those are dropped.  A non-zero key bias (e.g. a
  transformers model built with ``key_bias=True``) raises: RoPE rotates it with the key, so
  unlike in a plain ViT softmax would not cancel it.  Mask tokens, RoPE buffers and the 7B's
  local-crop norm are dropped.

* **whole EoMT-DINOv3 checkpoints** (:func:`convert_eomt_dinov3_checkpoint`):

  * ``'authors'``: the released ``pytorch_model.bin`` of tue-mps/eomt's DINOv3 models hold
    *deltas*: the authors' configs set ``delta_weights: True``, and their loader adds every key of
    the checkpoint to the model as built, whose encoder holds the (gated) DINOv3 weights and whose
    other parameters it zeroes first.  So backbone = DINOv3 + delta, everything else = the stored
    value.  The DINOv3 weights must be given (``base``); without them the error names the
    DINOv3 model that the delta belongs to.  On load (``load_from``, the inferencers) they are
    the ones the model's ``DINOv3ViT`` names in its ``Pretrained`` init_cfg, read then.
  * ``'transformers'``: ``EomtDinov3ForUniversalSegmentation`` (``query``,
    ``class_predictor``, ``mask_head.fc{1,2,3}``, ``upscale_block.block.{i}``), absolute.
"""
import re
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .formats import FORMATS, CheckpointFormat, Target, register_format

StateDict = Dict[str, Tensor]

DINOV3_FORMATS = ('mmeomt', 'transformers', 'authors', 'timm', 'dinov3')
EOMT_DINOV3_FORMATS = ('authors', 'transformers')

_ANCHORS = {
    'patch_embed.projection.weight': 'mmeomt',
    'embeddings.patch_embeddings.weight': 'transformers',
    'patch_embed.patch_embeddings.weight': 'authors',
    'patch_embed.proj.weight': 'timm',  # or 'dinov3': told apart by storage_tokens
}

# Placeholders resolved after renaming: separate q/k/v and gate/up weights are fused into ours.
_L = r'(?:blocks|layers|layer|model\.layer)\.(\d+)\.'
_HF_BLOCK = [
    (_L + r'norm([12])\.(weight|bias)$', r'layers.\1.ln\2.\3'),
    (_L + r'attention\.([qkv])_proj\.(weight|bias)$', r'layers.\1.attn.<\2>.\3'),
    (_L + r'attention\.o_proj\.(weight|bias)$', r'layers.\1.attn.proj.\2'),
    (_L + r'layer_scale1\.lambda1$', r'layers.\1.attn.gamma1.weight'),
    (_L + r'layer_scale2\.lambda1$', r'layers.\1.ffn.gamma2.weight'),
    (_L + r'mlp\.(up|down|gate)_proj\.(weight|bias)$', r'layers.\1.ffn.<\2>.\3'),
]
_RULES: Dict[str, List[Tuple[str, Optional[str]]]] = {
    # (regex on the key without prefix, replacement; None = not part of the ViT, dropped)
    'mmeomt': [(r'^(.*)$', r'\1')],
    'transformers': [
        (r'^embeddings\.(cls_token|register_tokens)$', r'\1'),
        (r'^embeddings\.mask_token$', None),
        (r'^embeddings\.patch_embeddings\.(weight|bias)$', r'patch_embed.projection.\1'),
        *_HF_BLOCK,
        (r'^(?:norm|layernorm)\.(weight|bias)$', r'ln1.\1'),
        (r'^rope_embeddings\.', None),
    ],
    'authors': [
        (r'^patch_embed\.(cls_token|register_tokens)$', r'\1'),
        (r'^patch_embed\.mask_token$', None),
        (r'^patch_embed\.patch_embeddings\.(weight|bias)$', r'patch_embed.projection.\1'),
        *_HF_BLOCK,
        (r'^norm\.(weight|bias)$', r'ln1.\1'),
        (r'^rope_embeddings\.', None),
    ],
    'timm': [
        (r'^cls_token$', 'cls_token'),
        (r'^reg_token$', 'register_tokens'),
        (r'^patch_embed\.proj\.(weight|bias)$', r'patch_embed.projection.\1'),
        (_L + r'norm([12])\.(weight|bias)$', r'layers.\1.ln\2.\3'),
        (_L + r'attn\.qkv\.weight$', r'layers.\1.attn.qkv.weight'),
        (_L + r'attn\.(q|v)_bias$', r'layers.\1.attn.\2_bias'),
        (_L + r'attn\.k_bias$', None),  # a buffer of zeros
        (_L + r'attn\.proj\.(weight|bias)$', r'layers.\1.attn.proj.\2'),
        (_L + r'gamma_1$', r'layers.\1.attn.gamma1.weight'),
        (_L + r'gamma_2$', r'layers.\1.ffn.gamma2.weight'),
        (_L + r'mlp\.fc1\.(weight|bias)$', r'layers.\1.ffn.<up>.\2'),
        (_L + r'mlp\.fc1_g\.(weight|bias)$', r'layers.\1.ffn.<gate>.\2'),
        (_L + r'mlp\.fc1_x\.(weight|bias)$', r'layers.\1.ffn.<up>.\2'),
        (_L + r'mlp\.fc2\.(weight|bias)$', r'layers.\1.ffn.<down>.\2'),
        (r'^norm\.(weight|bias)$', r'ln1.\1'),
        (r'^rope\.', None),
        (r'^head\.', None),
    ],
    'dinov3': [
        (r'^cls_token$', 'cls_token'),
        (r'^storage_tokens$', 'register_tokens'),
        (r'^mask_token$', None),
        (r'^patch_embed\.proj\.(weight|bias)$', r'patch_embed.projection.\1'),
        (_L + r'norm([12])\.(weight|bias)$', r'layers.\1.ln\2.\3'),
        (_L + r'attn\.qkv\.weight$', r'layers.\1.attn.qkv.weight'),
        (_L + r'attn\.qkv\.bias$', r'layers.\1.attn.<qkv_bias>'),
        (_L + r'attn\.qkv\.bias_mask$', None),
        (_L + r'attn\.proj\.(weight|bias)$', r'layers.\1.attn.proj.\2'),
        (_L + r'ls1\.gamma$', r'layers.\1.attn.gamma1.weight'),
        (_L + r'ls2\.gamma$', r'layers.\1.ffn.gamma2.weight'),
        (_L + r'mlp\.fc1\.(weight|bias)$', r'layers.\1.ffn.<up>.\2'),
        (_L + r'mlp\.w1\.(weight|bias)$', r'layers.\1.ffn.<gate>.\2'),
        (_L + r'mlp\.w2\.(weight|bias)$', r'layers.\1.ffn.<up>.\2'),
        (_L + r'mlp\.(?:fc2|w3)\.(weight|bias)$', r'layers.\1.ffn.<down>.\2'),
        (r'^norm\.(weight|bias)$', r'ln1.\1'),
        (r'^(?:rope_embed\.|local_cls_norm\.|head\.)', None),
    ],
}


def _sample(keys, n: int = 8) -> str:
    keys = list(keys)
    more = f', ... ({len(keys)} in all)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def detect_dinov3_format(state_dict: Mapping[str, Tensor]) -> Tuple[str, str]:
    """Find the layout of a DINOv3 state dict and the common prefix of its ViT keys.

    Returns:
        ``(format, prefix)``: a format of :data:`DINOV3_FORMATS`; prefix ``''`` or ending in
        ``'.'``.

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
            'Unrecognised DINOv3 checkpoint: expected a patch-embedding kernel named one of '
            f'{sorted(_ANCHORS)}, possibly under a common prefix; got keys {_sample(state_dict)}')
    if len(found) > 1:
        raise ValueError(f'Ambiguous DINOv3 checkpoint: it holds several ViTs, under the prefixes '
                         f'{sorted(found)}; select one before loading')
    (prefix, family), = found.items()
    if family == 'timm' and prefix + 'storage_tokens' in state_dict:
        family = 'dinov3'
    return family, prefix


def _rename(state_dict: Mapping[str, Tensor], fmt: str) -> StateDict:
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
        raise ValueError(f'DINOv3 checkpoint in {fmt} format has keys that are not part of a '
                         f'DINOv3 ViT: {_sample(unknown)}')
    _fuse(out)
    return out


def _take(sd: StateDict, block: str, parts, param: str, what: str) -> List[Tensor]:
    keys = [f'{block}<{p}>.{param}' for p in parts]
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ValueError(f'DINOv3 checkpoint: {what} of {block[:-1]} comes without '
                         f'{[k.replace("<", "").replace(">", "") for k in missing]}')
    return [sd.pop(k) for k in keys]


def _fuse(sd: StateDict) -> None:
    """Placeholders -> our modules: ``attn.<q|k|v>`` -> ``qkv`` (+ ``q_bias``/``v_bias``),
    ``attn.<qkv_bias>`` -> ``q_bias``/``v_bias``, ``ffn.<up|down|gate>`` -> the MLP
    (``layers.0.0``/``layers.1``) or the SwiGLU (``w12`` = [gate; up], ``w3``)."""
    for key in [k for k in sd if k.endswith('.attn.<q>.weight')]:
        block = key[:-len('<q>.weight')]
        sd[block + 'qkv.weight'] = torch.cat(_take(sd, block, 'qkv', 'weight', 'the query'))
        if block + '<q>.bias' in sd:
            sd[block + 'q_bias'] = sd.pop(block + '<q>.bias')
        if block + '<v>.bias' in sd:
            sd[block + 'v_bias'] = sd.pop(block + '<v>.bias')
        k_bias = sd.pop(block + '<k>.bias', None)
        if k_bias is not None and k_bias.any():
            raise ValueError(f'DINOv3 checkpoint: {block}k_proj has a non-zero bias; DINOv3 '
                             'ViTs have none (and RoPE would not cancel it)')
    for key in [k for k in sd if k.endswith('.attn.<qkv_bias>')]:
        block = key[:-len('<qkv_bias>')]
        # The key third is masked to 0 by the release's bias_mask (dropped with it).
        q, _, v = sd.pop(key).chunk(3)
        sd[block + 'q_bias'], sd[block + 'v_bias'] = q, v
    for key in [k for k in sd if k.endswith('.ffn.<down>.weight')]:
        block = key[:-len('<down>.weight')]
        gated = block + '<gate>.weight' in sd
        for param in ('weight', 'bias'):
            if block + f'<down>.{param}' not in sd:
                continue
            if gated:
                gate, up = _take(sd, block, ('gate', 'up'), param, 'the SwiGLU gate')
                sd[f'{block}w12.{param}'] = torch.cat([gate, up])
                sd[f'{block}w3.{param}'] = sd.pop(f'{block}<down>.{param}')
            else:
                up, = _take(sd, block, ('up', ), param, 'the MLP output')
                sd[f'{block}layers.0.0.{param}'] = up
                sd[f'{block}layers.1.{param}'] = sd.pop(f'{block}<down>.{param}')
    leftover = [k for k in sd if '<' in k]
    if leftover:
        raise ValueError(f'DINOv3 checkpoint: incomplete attention or MLP weights '
                         f'{_sample(leftover)}')


def convert_dinov3(state_dict: Mapping[str, Tensor]) -> StateDict:
    """DINOv3 weights of any layout of :data:`DINOV3_FORMATS` -> :class:`DINOv3ViT` keys.

    Keys outside the ViT's common prefix (e.g. a classifier) are dropped.

    Raises:
        ValueError: unknown layout, or keys of a known layout that are not part of the ViT.
    """
    fmt, prefix = detect_dinov3_format(state_dict)
    local = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return _rename(local, fmt)


# ------------------------------------------------------------------------------------------
# Whole EoMT-DINOv3 checkpoints
# ------------------------------------------------------------------------------------------
_AUTHORS_BACKBONE = 'network.encoder.backbone.'
_HF_BACKBONE = re.compile(r'^(embeddings|layers|layernorm|rope_embeddings)\.')
_Repl = Union[str, Callable, None]
_HEAD_RULES: Dict[str, List[Tuple[str, _Repl]]] = {
    # The same head layouts as the DINOv2 EoMT checkpoints of each source.
    'authors': [
        (r'^network\.q\.weight$', 'queries.weight'),
        (r'^network\.(class_head|mask_head\.[024])\.(weight|bias)$', r'\1.\2'),
        (r'^network\.upscale\.(\d+)\.(conv1|conv2|norm)\.(weight|bias)$', r'upscale.\1.\2.\3'),
        (r'^network\.attn_mask_probs$', 'attn_mask_probs'),
        (r'^network\.encoder\.pixel_(mean|std)$', None),  # the data preprocessor normalises
        (r'^criterion\.', None),
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

#: the DINOv3 model each authors' delta belongs to, by (embed dims, depth)
DINOV3_BASES = {
    (384, 12): 'facebook/dinov3-vits16-pretrain-lvd1689m',
    (768, 12): 'facebook/dinov3-vitb16-pretrain-lvd1689m',
    (1024, 24): 'facebook/dinov3-vitl16-pretrain-lvd1689m',
}


def _clean(state_dict: Mapping[str, Tensor]) -> StateDict:
    return {k.replace('._orig_mod', '').replace('_orig_mod.', ''): v
            for k, v in state_dict.items()}


def detect_eomt_dinov3_format(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """``'authors'`` or ``'transformers'`` for an EoMT-DINOv3 checkpoint, None for anything
    else (e.g. an EoMT-DINOv2 one, whose backbone has a position embedding and no RoPE)."""
    keys = _clean(state_dict)
    if 'network.q.weight' in keys and (
            _AUTHORS_BACKBONE + 'patch_embed.patch_embeddings.weight' in keys):
        return 'authors'
    if ('query.weight' in keys and 'class_predictor.weight' in keys
            and 'embeddings.patch_embeddings.weight' in keys
            and 'layers.0.attention.q_proj.weight' in keys):
        return 'transformers'
    return None


def dinov3_base_name(backbone: Mapping[str, Tensor]) -> str:
    """The DINOv3 model a backbone (in our names) is the size of, for messages."""
    dims = backbone['cls_token'].shape[-1] if 'cls_token' in backbone else None
    depth = len({k.split('.')[1] for k in backbone if k.startswith('layers.')})
    return DINOV3_BASES.get((dims, depth), f'a DINOv3 ViT of {dims} dims and {depth} blocks')


def convert_eomt_dinov3_checkpoint(state_dict: Mapping[str, Tensor],
                                   base: Optional[Mapping[str, Tensor]] = None,
                                   prefix: str = '', base_hint: str = '') -> StateDict:
    """An EoMT-DINOv3 checkpoint -> the keys of an ``EoMT`` core (with a ``DINOv3ViT``) at
    ``prefix``.

    Args:
        state_dict: an authors' (delta) or transformers checkpoint.
        base: the DINOv3 weights (any layout of :data:`DINOV3_FORMATS`) that an authors'
            delta is added to; unused for transformers checkpoints.
        prefix: ``''`` for ``EoMT`` itself, ``'eomt.'`` for the detector / segmentor.
        base_hint: how to give ``base`` where this is called from, for the error message
            (default: the backbone's ``init_cfg`` checkpoint).

    Returns:
        ``{prefix}backbone.*``, ``{prefix}queries.weight``, ``{prefix}class_head.*``,
        ``{prefix}mask_head.{0,2,4}.*``, ``{prefix}upscale.{i}.*``, ``{prefix}attn_mask_probs``.

    Raises:
        ValueError: not an EoMT-DINOv3 checkpoint; an authors' delta without ``base`` (the
            message names the DINOv3 weights needed); keys that do not match.
    """
    if prefix and not prefix.endswith('.'):
        raise ValueError(f"convert_eomt_dinov3_checkpoint: prefix must be '' or end with '.', "
                         f'got {prefix!r}')
    state_dict = _clean(state_dict)
    fmt = detect_eomt_dinov3_format(state_dict)
    if fmt is None:
        raise ValueError('Not an EoMT-DINOv3 checkpoint: expected the authors\' keys '
                         '(network.q.weight, network.encoder.backbone.patch_embed.'
                         'patch_embeddings.weight) or EomtDinov3ForUniversalSegmentation keys '
                         '(query.weight, embeddings.patch_embeddings.weight, '
                         f'layers.N.attention.q_proj.weight); got {_sample(state_dict)}')
    if fmt == 'authors':
        raw = {k: v for k, v in state_dict.items() if k.startswith(_AUTHORS_BACKBONE)}
    else:
        raw = {k: v for k, v in state_dict.items() if _HF_BACKBONE.match(k)}
    backbone = convert_dinov3(raw)
    if fmt == 'authors':
        backbone = _add_delta(backbone, base, base_hint)

    out = {f'{prefix}backbone.{k}': v for k, v in backbone.items()}
    rules = [(re.compile(p), r) for p, r in _HEAD_RULES[fmt]]
    unknown = []
    for key, value in state_dict.items():
        if key in raw:
            continue
        for pattern, repl in rules:
            if pattern.search(key):
                if repl is not None:
                    out[prefix + pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'EoMT-DINOv3 checkpoint in {fmt} format has keys EoMT has no place '
                         f'for: {_sample(unknown)}')
    return out


def _add_delta(delta: StateDict, base: Optional[Mapping[str, Tensor]],
               base_hint: str) -> StateDict:
    """DINOv3 weights + the authors' delta, both in our names."""
    name = dinov3_base_name(delta)
    if base is None:
        hint = base_hint or "give their path as the backbone's init_cfg checkpoint"
        raise ValueError(
            f'This is an authors\' EoMT-DINOv3 checkpoint: its backbone weights are deltas to '
            f'the DINOv3 weights {name}, which are missing.  Download them (a gated model: '
            f'accept the DINOv3 licence on Hugging Face) and {hint} (see docs/dinov3.md).')
    base = convert_dinov3(base)
    missing = [k for k in delta if k not in base]
    mismatched = [f'{k}: {tuple(base[k].shape)} vs {tuple(v.shape)}'
                  for k, v in delta.items() if k in base and base[k].shape != v.shape]
    if missing or mismatched:
        raise ValueError(f'The DINOv3 base weights do not fit this delta (expected {name}): '
                         f'missing {_sample(missing)}; shape mismatches (base vs delta) '
                         f'{_sample(mismatched)}')
    out = dict(base)
    for key, value in delta.items():
        out[key] = base[key].to(value.dtype) + value
    return out


# ------------------------------------------------------------------------------------------
# The entries of the format table
# ------------------------------------------------------------------------------------------
def _recognise(fmt: str) -> Callable[[Mapping[str, Tensor]], Optional[str]]:
    """``recognise`` of the table entry of our format ``fmt``: its prefix, or None.

    Ours and timm's share their anchors with the DINOv2 layouts; a DINOv2 ViT always has a
    learned ``pos_embed``, a DINOv3 one never.
    """
    def recognise(state_dict: Mapping[str, Tensor]) -> Optional[str]:
        try:
            found, prefix = detect_dinov3_format(state_dict)
        except ValueError as error:
            if 'Ambiguous' in str(error):
                raise
            return None
        if found != fmt or prefix + 'pos_embed' in state_dict:
            return None
        return prefix

    return recognise


def _fit_dinov3(sd: StateDict, target: Target) -> StateDict:
    """Fit renamed DINOv3 weights to the model being loaded.

    timm's ``vit_*_dinov3`` without ``_qkvb`` have no query/value biases (the distilled S/B/L
    ended up with all-zero ones, which timm leaves out), so a model with biases gets zeros:
    the same function.  DINOv3 weights into a DINOv2 ``EoMTViT`` are refused.
    """
    if not isinstance(target, nn.Module):
        return sd
    from mmeomt.models.backbones import DINOv3ViT
    if not isinstance(target, DINOv3ViT):
        raise ValueError(f'these are DINOv3 weights (rotary positions, no pos_embed); a '
                         f'{type(target).__name__} takes DINOv2 weights, a DINOv3ViT these')
    for name, param in target.named_parameters():
        if name.endswith(('.q_bias', '.v_bias')) and name not in sd:
            sd[name] = torch.zeros_like(param, device='cpu')
    return sd


_DESCRIPTIONS = {
    'mmeomt': 'ours, DINOv3ViT: patch_embed.projection, layers.N.attn.q_bias, no pos_embed',
    'transformers': 'DINOv3ViTModel: embeddings.patch_embeddings, (model.)layer.N.attention',
    'authors': "the authors' DINOv3 encoder: patch_embed.patch_embeddings, blocks.N.attention",
    'timm': 'timm vit_*_patch16_dinov3: patch_embed.proj, reg_token, blocks.N.gamma_1',
    'dinov3': 'the original DINOv3 release: patch_embed.proj, storage_tokens, ls1.gamma',
}
for _fmt in DINOV3_FORMATS:
    register_format(CheckpointFormat(
        name='dinov3' if _fmt == 'dinov3' else f'dinov3-{_fmt}', kind='backbone',
        recognise=_recognise(_fmt), rules=_RULES[_fmt], finish=(_fuse, ), fit=_fit_dinov3,
        description=_DESCRIPTIONS[_fmt]), before=FORMATS['backbone'][0].name)


def _base_of(model: nn.Module) -> Tuple[Optional[StateDict], str]:
    """The DINOv3 weights of the ``Pretrained`` init_cfg of ``model``'s ``DINOv3ViT``, read now,
    and a hint for the error message when there are none."""
    from mmeomt.models.backbones import DINOv3ViT
    from .loading import load_checkpoint_file, state_dict_of
    vits = [m for m in model.modules() if isinstance(m, DINOv3ViT)]
    if len(vits) != 1:
        return None, ''
    init_cfgs = vits[0].init_cfg if isinstance(vits[0].init_cfg, list) else [vits[0].init_cfg]
    pretrained = [c for c in init_cfgs if isinstance(c, Mapping) and c.get('type') == 'Pretrained']
    if not pretrained or not pretrained[0].get('checkpoint'):
        return None, ("give their path as the backbone's init_cfg checkpoint (it has none), or "
                      'add them to the delta with tools/model_converters/eomt2mmeomt.py --base')
    path, prefix = str(pretrained[0]['checkpoint']), pretrained[0].get('prefix')
    try:
        base = state_dict_of(load_checkpoint_file(path, 'cpu'), path)
    except Exception as error:  # a missing file, a refused or failed download, a bad file
        return None, (f"give their path as the backbone's init_cfg checkpoint, which names "
                      f'{path}: it could not be read ({type(error).__name__}: {error})')
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        base = {k[len(prefix):]: v for k, v in base.items() if k.startswith(prefix)}
    return base, ''


def _fit_authors_delta(sd: StateDict, target: Target) -> StateDict:
    """The authors' delta + the DINOv3 weights of the model's backbone init_cfg."""
    delta = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    base, hint = _base_of(target) if isinstance(target, nn.Module) else (None, '')
    summed = _add_delta(delta, base, hint)
    out = {k: v for k, v in sd.items() if not k.startswith('backbone.')}
    out.update(('backbone.' + k, v) for k, v in summed.items())
    return out


def _recognise_eomt(fmt: str) -> Callable[[Mapping[str, Tensor]], Optional[str]]:
    return lambda state_dict: '' if detect_eomt_dinov3_format(state_dict) == fmt else None


register_format(CheckpointFormat(
    name='authors-dinov3', kind='eomt', recognise=_recognise_eomt('authors'),
    backbone=r'^network\.encoder\.backbone\.', rules=_HEAD_RULES['authors'],
    fit=_fit_authors_delta,
    description="the authors' EoMT-DINOv3 deltas: network.q.weight, "
    'network.encoder.backbone.patch_embed.patch_embeddings'), before='authors')
register_format(CheckpointFormat(
    name='transformers-dinov3', kind='eomt', recognise=_recognise_eomt('transformers'),
    backbone=_HF_BACKBONE.pattern, rules=_HEAD_RULES['transformers'],
    description='transformers EomtDinov3ForUniversalSegmentation: query.weight, '
    'embeddings.patch_embeddings, layers.N.attention'), before='transformers')

__all__ = ['DINOV3_BASES', 'DINOV3_FORMATS', 'EOMT_DINOV3_FORMATS', 'convert_dinov3', 'convert_eomt_dinov3_checkpoint', 'detect_dinov3_format',
           'detect_eomt_dinov3_format', 'dinov3_base_name']
