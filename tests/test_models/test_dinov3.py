"""DINOv3ViT: the DINOv3 encoder with RoPE, and the weights it accepts (no reference needed).

What it promises:
* tokens ``[CLS, 4 registers, patches]``, no position embedding added; positions enter each
  block as RoPE on the patch tokens, whose grid is normalised per axis to [-1, 1] and so follows
  the input size; in training the coordinates are augmented once per forward, in eval never;
* the EoMT core drives it through the same explicit interface as EoMTViT (embed,
  block_positions, forward_block), with masked attention;
* lr-decay depths as EoMTViT's; ``decay_query_blocks=False`` (the authors' DINOv3 recipes)
  gives the blocks that see the queries the base lr;
* DINOv3 weights load under any common prefix through ``init_cfg``; the authors' delta
  checkpoints name the DINOv3 weights they need when those are missing.
(Parity with transformers 5 and timm: test_parity_dinov3.py.)
"""
import math

import pytest
import torch

from mmeomt.engine import EoMTOptimWrapperConstructor
from mmeomt.models import DINOv3ViT, EoMT, EoMTViT
from mmeomt.models.backbones.dinov3 import DINOv3RoPE, apply_rope, patch_coords
from mmeomt.models.checkpoint.dinov3 import (convert_dinov3,
                                             convert_eomt_dinov3_checkpoint,
                                             detect_dinov3_format,
                                             detect_eomt_dinov3_format, dinov3_base_name)
from mmeomt.registry import MODELS

ARCH = dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128)


def vit(**kwargs):
    model = DINOv3ViT(arch=ARCH, **kwargs).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def to_transformers(state_dict):
    """Our keys in transformers 5.x ``DINOv3ViTModel`` names (the inverse of the conversion)."""
    out = {'embeddings.mask_token': torch.zeros(1, 1, 64)}
    for key, value in state_dict.items():
        if key in ('cls_token', 'register_tokens'):
            out['embeddings.' + key] = value
        elif key.startswith('patch_embed.projection.'):
            out['embeddings.patch_embeddings.' + key.split('.')[-1]] = value
        elif key.startswith('ln1.'):
            out['norm.' + key[4:]] = value
        else:
            i, rest = key.split('.', 2)[1:]
            block = f'model.layer.{i}.'
            names = {'ln1.weight': 'norm1.weight', 'ln1.bias': 'norm1.bias',
                     'ln2.weight': 'norm2.weight', 'ln2.bias': 'norm2.bias',
                     'attn.q_bias': 'attention.q_proj.bias',
                     'attn.v_bias': 'attention.v_proj.bias',
                     'attn.proj.weight': 'attention.o_proj.weight',
                     'attn.proj.bias': 'attention.o_proj.bias',
                     'attn.gamma1.weight': 'layer_scale1.lambda1',
                     'ffn.gamma2.weight': 'layer_scale2.lambda1',
                     'ffn.layers.0.0.weight': 'mlp.up_proj.weight',
                     'ffn.layers.0.0.bias': 'mlp.up_proj.bias',
                     'ffn.layers.1.weight': 'mlp.down_proj.weight',
                     'ffn.layers.1.bias': 'mlp.down_proj.bias'}
            if rest == 'attn.qkv.weight':
                for part, w in zip('qkv', value.chunk(3)):
                    out[f'{block}attention.{part}_proj.weight'] = w
            else:
                out[block + names[rest]] = value
    return out


# ----------------------------------------------------------------------------- RoPE
def test_patch_coords_follow_the_grid():
    coords = patch_coords((2, 4))
    assert coords.shape == (8, 2)
    assert torch.allclose(coords[:4, 0], torch.full((4, ), -0.5))  # row 0 of 2: y = -1/2
    assert torch.allclose(coords[:4, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    # Another input size: the same [-1, 1] range, sampled more densely (nothing to resample).
    big = patch_coords((8, 16))
    assert big.min() == pytest.approx(-1 + 1 / 16) and big.max() == pytest.approx(1 - 1 / 16)


def test_rope_rotates_patches_only_and_keeps_norms():
    rope = DINOv3RoPE(head_dims=32).eval()
    cos, sin = rope((3, 2))
    assert cos.shape == sin.shape == (6, 32)
    # frequencies theta^(-4k/d): 8 per axis, y first then x, repeated for the two halves
    f = 100.**(-torch.arange(8) * 4 / 32)
    y, x = patch_coords((3, 2))[1]
    expected = torch.cat([2 * math.pi * y * f, 2 * math.pi * x * f]).tile(2)
    torch.testing.assert_close(cos[1], expected.cos())
    q = torch.randn(2, 4, 5 + 6, 32)  # 5 prefix tokens, 6 patches
    rotated = apply_rope(q, (cos, sin))
    assert torch.equal(rotated[..., :5, :], q[..., :5, :])
    # rotate_half pairs dim j with j + d/2: each pair's norm is kept
    pair_norm = lambda t: t[..., :16].square() + t[..., 16:].square()  # noqa: E731
    torch.testing.assert_close(pair_norm(rotated), pair_norm(q))


def test_rope_coordinate_augmentation_only_in_training():
    rope = DINOv3RoPE(head_dims=32, rescale=2.)
    rope.eval()
    assert torch.equal(rope((4, 4))[0], rope((4, 4))[0])
    rope.train()
    torch.manual_seed(0)
    first, second = rope((4, 4))[0], rope((4, 4))[0]
    assert not torch.equal(first, second)  # a new scale per forward
    plain = DINOv3RoPE(head_dims=32, rescale=None).train()
    assert torch.equal(plain((4, 4))[0], rope.eval()((4, 4))[0])
    with pytest.raises(ValueError, match='multiple of 4'):
        DINOv3RoPE(head_dims=30)


# ----------------------------------------------------------------------------- backbone
def test_tokens_and_other_input_sizes():
    model = vit()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        seq, grid = model.embed(x)
    assert grid == (4, 3) and seq.shape == (2, 5 + 12, 64)
    assert torch.equal(seq[:, 0], model.cls_token[:, 0].expand(2, -1))
    assert torch.equal(seq[:, 1:5], model.register_tokens.expand(2, -1, -1))
    assert model(torch.randn(1, 3, 96, 160))[0].shape == (1, 5 + 6 * 10, 64)
    assert not hasattr(model, 'pos_embed')


def test_block_interface_is_explicit():
    model = vit()
    x, grid = model.embed(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='positions'):
        model.forward_block(0, x)
    rope = model.block_positions(grid, x.dtype)
    assert model.forward_block(0, x, positions=rope).shape == x.shape
    dinov2 = EoMTViT(arch=ARCH, img_size=32)
    assert dinov2.block_positions((2, 2), torch.float32) is None
    with pytest.raises(ValueError, match='positions must be None'):
        dinov2.forward_block(0, x, positions=rope)


def test_eomt_core_on_dinov3_with_masked_attention():
    torch.manual_seed(0)
    core = EoMT(dict(type='mmeomt.DINOv3ViT', arch=ARCH), num_classes=3, num_queries=5,
                num_blocks=2)
    core.train()
    masks, classes = core(torch.randn(2, 3, 64, 64))
    assert len(masks) == 3 and masks[-1].shape == (2, 5, 16, 16)
    assert classes[-1].shape == (2, 5, 4)
    sum(m.square().mean() for m in masks).backward()
    assert core.backbone.layers[0].attn.q_bias.grad is not None
    core.eval()
    core.attn_mask_probs.zero_()
    with torch.no_grad():
        masks, _ = core(torch.randn(1, 3, 96, 64))  # another size: the RoPE grid follows
    assert len(masks) == 1 and masks[0].shape == (1, 5, 24, 16)


def test_arch_zoo_and_errors():
    assert DINOv3ViT.arch_zoo['large'] == dict(embed_dims=1024, num_layers=24, num_heads=16,
                                               feedforward_channels=4096)
    assert DINOv3ViT.arch_zoo['small']['embed_dims'] == 384
    with pytest.raises(KeyError, match='arch'):
        DINOv3ViT(arch='huge')
    with pytest.raises(KeyError, match='num_heads'):
        DINOv3ViT(arch=dict(embed_dims=64, num_layers=2, feedforward_channels=128))
    with pytest.raises(ValueError, match="'mlp' or 'swiglu'"):
        DINOv3ViT(arch=dict(ARCH, ffn_type='geglu'))
    norm = DINOv3ViT(arch=ARCH).ln1
    assert norm.eps == 1e-5  # DINOv3's, not DINOv2's 1e-6


def test_get_layer_depth_matches_eomtvit():
    ours, dinov2 = DINOv3ViT(arch=ARCH), EoMTViT(arch=ARCH, img_size=32)
    for name in ('cls_token', 'register_tokens', 'patch_embed.projection.weight',
                 'layers.0.attn.qkv.weight', 'layers.3.ffn.layers.1.bias', 'ln1.weight'):
        assert ours.get_layer_depth(name) == dinov2.get_layer_depth(name), name
    assert ours.get_layer_depth('layers.2.attn.q_bias') == (3, 5)


class _Wrapped(torch.nn.Module):
    """A core at ``eomt``, as in the detector and segmentor."""

    def __init__(self):
        super().__init__()
        self.eomt = MODELS.build(dict(type='mmeomt.EoMT', backbone=dict(
            type='mmeomt.DINOv3ViT', arch=ARCH), num_classes=2, num_queries=3, num_blocks=2))


@pytest.mark.parametrize('decay_query_blocks', [True, False])
def test_layer_decay_of_query_blocks(decay_query_blocks):
    """The authors' DINOv3 recipes (``llrd_l2_enabled: False``): blocks 2 and 3 of 4, those that
    see the queries, at the base lr; the blocks before them and the stem still decayed."""
    model = _Wrapped()
    constructor = EoMTOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
        dict(layer_decay_rate=0.5, decay_query_blocks=decay_query_blocks))
    groups = constructor(model).optimizer.param_groups
    lr_of = {id(p): g['lr'] for g in groups for p in g['params']}
    block = model.eomt.backbone.layers
    lr = [lr_of[id(block[i].attn.qkv.weight)] for i in range(4)]
    assert lr[:2] == pytest.approx([1e-4 * 0.5**3, 1e-4 * 0.5**2])
    assert lr[2:] == pytest.approx([1e-4, 1e-4] if not decay_query_blocks
                                   else [1e-4 * 0.5, 1e-4])
    assert lr_of[id(model.eomt.backbone.cls_token)] == pytest.approx(1e-4 * 0.5**3)
    assert all(g['vit'] for g in groups if 'backbone' in g['name'])
    with pytest.raises(ValueError, match='decay_query_blocks'):
        EoMTOptimWrapperConstructor(dict(type='OptimWrapper', optimizer=dict(
            type='AdamW', lr=1e-4, weight_decay=0.05)), dict(decay_query_blocks='no'))


# ----------------------------------------------------------------------------- weights
def test_pretrained_init_cfg_takes_transformers_weights_under_a_prefix(tmp_path):
    source = vit()
    hf = {'backbone.' + k: v for k, v in to_transformers(source.state_dict()).items()}
    assert detect_dinov3_format(hf) == ('transformers', 'backbone.')
    path = tmp_path / 'dinov3.pth'
    torch.save({'state_dict': hf}, path)
    model = DINOv3ViT(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                               prefix='backbone.'))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_formats_are_told_apart_and_unknown_keys_named():
    sd = to_transformers(vit().state_dict())
    assert detect_dinov3_format(sd)[0] == 'transformers'
    older = {k.replace('model.layer.', 'layer.'): v for k, v in sd.items()}  # transformers 4.x
    assert convert_dinov3(older).keys() == convert_dinov3(sd).keys()
    with pytest.raises(ValueError, match='not part of a DINOv3 ViT: embeddings.position'):
        convert_dinov3(dict(sd, **{'embeddings.position_embeddings': torch.zeros(1)}))
    with pytest.raises(ValueError, match='Unrecognised DINOv3 checkpoint'):
        convert_dinov3({'foo.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='Ambiguous'):
        convert_dinov3({'a.embeddings.patch_embeddings.weight': torch.zeros(1),
                        'b.patch_embed.proj.weight': torch.zeros(1)})
    del sd['model.layer.0.attention.v_proj.weight']
    with pytest.raises(ValueError, match=r'layers\.0\.attn comes without'):
        convert_dinov3(sd)


def test_dinov2_and_dinov3_weights_are_not_mixed():
    dinov2 = EoMTViT(arch=ARCH, img_size=32)
    with pytest.raises(RuntimeError, match='pos_embed'):  # torch lists what does not fit
        DINOv3ViT(arch=ARCH).load_state_dict(dinov2.state_dict())
    hf = to_transformers(vit().state_dict())
    with pytest.raises(ValueError, match='these are DINOv3 weights'):
        dinov2.load_state_dict(hf)


def test_delta_checkpoint_names_the_missing_base():
    backbone = {f'network.encoder.backbone.blocks.{i}.norm1.weight': torch.zeros(384)
                for i in range(12)}
    backbone['network.encoder.backbone.patch_embed.cls_token'] = torch.zeros(1, 1, 384)
    backbone['network.encoder.backbone.patch_embed.patch_embeddings.weight'] = torch.zeros(
        384, 3, 16, 16)
    delta = dict(backbone, **{'network.q.weight': torch.zeros(200, 384)})
    assert detect_eomt_dinov3_format(delta) == 'authors'
    assert dinov3_base_name(convert_dinov3(backbone)) == (
        'facebook/dinov3-vits16-pretrain-lvd1689m')
    with pytest.raises(ValueError, match='deltas to the DINOv3 weights facebook/dinov3-vits16-'
                                         'pretrain-lvd1689m, which are missing'):
        convert_eomt_dinov3_checkpoint(delta)
    with pytest.raises(ValueError, match='Not an EoMT-DINOv3 checkpoint'):
        convert_eomt_dinov3_checkpoint({'network.q.weight': torch.zeros(1)})
