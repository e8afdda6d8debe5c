"""An mmeomt ``EoMT`` core -> transformers ``EomtForUniversalSegmentation`` (weights and config).

The reverse of the ``'transformers'`` rules of :mod:`mmeomt.models.checkpoint.eomt` and
:mod:`mmeomt.models.checkpoint.dinov2`, so that a benchmark can run both implementations with the
same weights: our fused ``qkv`` is split into ``q_proj`` / ``k_proj`` / ``v_proj``, the
position grid ``(1, h*w, D)`` becomes the ``nn.Embedding`` weight ``(h*w, D)``, everything
else is renamed.  Converting the result back with ``convert_eomt_checkpoint`` gives the
original state dict (``tests/test_tools/test_benchmark.py``).
"""
import re
from typing import Dict, Mapping

from torch import Tensor, nn

# (regex on our key, transformers key); the ViT part first, then the EoMT head.
_RULES = [
    (r'^backbone\.(cls_token|register_tokens)$', r'embeddings.\1'),
    (r'^backbone\.patch_embed\.projection\.(weight|bias)$',
     r'embeddings.patch_embeddings.projection.\1'),
    (r'^backbone\.layers\.(\d+)\.ln([12])\.(weight|bias)$', r'layers.\1.norm\2.\3'),
    (r'^backbone\.layers\.(\d+)\.attn\.proj\.(weight|bias)$', r'layers.\1.attention.out_proj.\2'),
    (r'^backbone\.layers\.(\d+)\.attn\.gamma1\.weight$', r'layers.\1.layer_scale1.lambda1'),
    (r'^backbone\.layers\.(\d+)\.ffn\.gamma2\.weight$', r'layers.\1.layer_scale2.lambda1'),
    (r'^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$', r'layers.\1.mlp.fc1.\2'),
    (r'^backbone\.layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)$', r'layers.\1.mlp.fc2.\2'),
    (r'^backbone\.layers\.(\d+)\.ffn\.w12\.(weight|bias)$', r'layers.\1.mlp.weights_in.\2'),
    (r'^backbone\.layers\.(\d+)\.ffn\.w3\.(weight|bias)$', r'layers.\1.mlp.weights_out.\2'),
    (r'^backbone\.ln1\.(weight|bias)$', r'layernorm.\1'),
    (r'^queries\.weight$', 'query.weight'),
    (r'^class_head\.(weight|bias)$', r'class_predictor.\1'),
    (r'^mask_head\.([024])\.(weight|bias)$',
     lambda m: f'mask_head.fc{int(m[1]) // 2 + 1}.{m[2]}'),
    (r'^upscale\.(\d+)\.(conv1|conv2)\.(weight|bias)$', r'upscale_block.block.\1.\2.\3'),
    (r'^upscale\.(\d+)\.norm\.(weight|bias)$', r'upscale_block.block.\1.layernorm2d.\2'),
    (r'^attn_mask_probs$', 'attn_mask_probs'),
]
_QKV = re.compile(r'^backbone\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$')


def eomt_to_transformers(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Rename the state dict of an ``EoMT`` core (no ``eomt.`` prefix) to transformers' keys.

    Raises:
        ValueError: keys that have no place in ``EomtForUniversalSegmentation``.
    """
    rules = [(re.compile(pattern), repl) for pattern, repl in _RULES]
    out, unknown = {}, []
    for key, value in state_dict.items():
        qkv = _QKV.match(key)
        if qkv:
            for name, part in zip('qkv', value.chunk(3, dim=0)):
                out[f'layers.{qkv[1]}.attention.{name}_proj.{qkv[2]}'] = part
        elif key == 'backbone.pos_embed':
            out['embeddings.position_embeddings.weight'] = value[0]
        else:
            for pattern, repl in rules:
                if pattern.match(key):
                    out[pattern.sub(repl, key)] = value
                    break
            else:
                unknown.append(key)
    if unknown:
        raise ValueError(f'eomt_to_transformers: no transformers key for {unknown[:8]}')
    return out


def transformers_config(core: nn.Module) -> dict:
    """``EomtConfig`` keyword arguments describing an ``EoMT`` core of square input size.

    Raises:
        ValueError: a non-square position grid (transformers' EoMT has one ``image_size``).
    """
    vit = core.backbone
    height, width = vit.img_size
    if height != width:
        raise ValueError(f'transformers_config: EomtConfig needs a square input, got '
                         f'{vit.img_size}')
    arch = vit.arch_settings
    return dict(hidden_size=vit.embed_dims, num_hidden_layers=vit.num_layers,
                num_attention_heads=vit.num_heads,
                mlp_ratio=arch['feedforward_channels'] // vit.embed_dims,
                use_swiglu_ffn=arch.get('ffn_type', 'origin') == 'swiglu_fused',
                image_size=height, patch_size=vit.patch_size,
                num_register_tokens=vit.num_register_tokens,
                num_upscale_blocks=len(core.upscale), num_blocks=core.num_blocks,
                num_queries=core.num_queries, num_labels=core.num_classes)
