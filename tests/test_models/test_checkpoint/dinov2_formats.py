"""Test helpers: write an ``EoMTViT`` / ``EoMT`` state dict in the foreign layouts.

Written from the layouts' published key names, independently of the converters under test,
so that converting back must reproduce the original weights exactly.
"""
import re

import torch

_TIMM = [
    (r'^register_tokens$', 'reg_token'),
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^layers\.(\d+)\.ln([12])\.', r'blocks.\1.norm\2.'),
    (r'^layers\.(\d+)\.attn\.gamma1\.weight$', r'blocks.\1.ls1.gamma'),
    (r'^layers\.(\d+)\.ffn\.gamma2\.weight$', r'blocks.\1.ls2.gamma'),
    (r'^layers\.(\d+)\.attn\.', r'blocks.\1.attn.'),
    (r'^layers\.(\d+)\.ffn\.(?:layers\.0\.0|w12)\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.(?:layers\.1|w3)\.', r'blocks.\1.mlp.fc2.'),
    (r'^ln1\.', 'norm.'),
]
_HF = [
    (r'^(cls_token|register_tokens)$', r'embeddings.\1'),
    (r'^patch_embed\.projection\.', 'embeddings.patch_embeddings.projection.'),
    (r'^layers\.(\d+)\.ln([12])\.', r'encoder.layer.\1.norm\2.'),
    (r'^layers\.(\d+)\.attn\.proj\.', r'encoder.layer.\1.attention.output.dense.'),
    (r'^layers\.(\d+)\.attn\.gamma1\.weight$', r'encoder.layer.\1.layer_scale1.lambda1'),
    (r'^layers\.(\d+)\.ffn\.gamma2\.weight$', r'encoder.layer.\1.layer_scale2.lambda1'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'encoder.layer.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'encoder.layer.\1.mlp.fc2.'),
    (r'^layers\.(\d+)\.ffn\.w12\.', r'encoder.layer.\1.mlp.weights_in.'),
    (r'^layers\.(\d+)\.ffn\.w3\.', r'encoder.layer.\1.mlp.weights_out.'),
    (r'^ln1\.', 'layernorm.'),
]


def _rename(state, rules):
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            if re.search(pattern, key):
                key = re.sub(pattern, repl, key)
                break
        out[key] = value
    return out


def _with_cls_position(state, cls_key='cls_token', pos_key='pos_embed'):
    """Put a random [CLS] position in front of pos_embed, keeping cls + position unchanged."""
    state = dict(state)
    cls_pos = torch.randn_like(state[cls_key])
    state[cls_key] = state[cls_key] - cls_pos
    state[pos_key] = torch.cat([cls_pos, state[pos_key]], dim=1)
    return state


def to_timm(state):
    """timm ``vit_*_reg4_dinov2`` (``no_embed_class``: no [CLS] position)."""
    return _rename(state, _TIMM)


def to_mmpretrain(state):
    """mmpretrain's DINOv2: our names, no registers, a [CLS] position first in pos_embed."""
    state = {k: v for k, v in state.items() if k != 'register_tokens'}
    return _with_cls_position(state)


def to_transformers(state):
    """transformers ``Dinov2WithRegistersModel``: q/k/v apart, a [CLS] position, mask_token."""
    out = {}
    for key, value in state.items():
        match = re.match(r'^layers\.(\d+)\.attn\.qkv\.(weight|bias)$', key)
        if match:
            for name, part in zip(('query', 'key', 'value'), value.chunk(3, dim=0)):
                out[f'encoder.layer.{match[1]}.attention.attention.{name}.{match[2]}'] = part
        elif key == 'pos_embed':
            out['embeddings.position_embeddings'] = value
        else:
            out.update(_rename({key: value}, _HF))
    out['embeddings.mask_token'] = torch.zeros(1, state['cls_token'].shape[-1])
    return _with_cls_position(out, 'embeddings.cls_token', 'embeddings.position_embeddings')


def eomt_to_authors(state):
    """An ``EoMT`` state dict in the layout of the authors' released checkpoints."""
    out = {'network.encoder.pixel_mean': torch.rand(1, 3, 1, 1),
           'network.encoder.pixel_std': torch.rand(1, 3, 1, 1)}
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    out.update({f'network.encoder.backbone.{k}': v for k, v in to_timm(backbone).items()})
    for key, value in state.items():
        if key == 'queries.weight':
            out['network.q.weight'] = value
        elif not key.startswith('backbone.'):
            out[f'network.{key}'] = value  # class_head, mask_head.{0,2,4}, upscale.i, probs
    out['criterion.empty_weight'] = torch.ones(state['class_head.bias'].shape[0])
    return out


def randomise(module, seed=0):
    """Random values for every parameter (LayerScale included) so that no key goes unnoticed;
    zero-mean biases keep mask logits of both signs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            offset = 0.5 if p.dim() == 1 and not name.endswith('bias') else 0.0
            p.copy_(0.1 * torch.randn(p.shape, generator=g) + offset)
    return module
