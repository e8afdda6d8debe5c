"""EoMTViT: the DINOv2 encoder with registers, and the weights it accepts.

What it promises:
* tokens ``[CLS, 4 registers, patches]``; position embeddings on patch tokens only;
* lr-decay depths: stem 1, block i -> i + 1, final norm n (of n + 1);
* ``load_state_dict`` / ``init_cfg=Pretrained`` take DINOv2 weights in mmpretrain (with a [CLS]
  position), timm, original-DINOv2 and transformers layouts, under any common prefix, and fit
  them to the model (14 -> 16 kernels, any position grid); ``init_cfg`` loads strictly unless it
  says ``strict=False`` (mmpretrain's DINOv2 has no registers);
* ``load_state_dict(strict=False)`` reports keys of no known layout, our loading paths name
  them in a ``ValueError``.
"""
import pytest
import torch
import torch.nn.functional as F

from mmeomt.models import EoMTViT
from mmeomt.models.backbones.resample import resample_patch_embed, resample_pos_embed
from mmeomt.models.checkpoint import (convert_dinov2, detect_dinov2_format, fit_backbone_state,
                                      load_checkpoint_to_model)
from dinov2_formats import randomise, to_mmpretrain, to_timm, to_transformers

ARCH = dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128)
SWIGLU = dict(ARCH, ffn_type='swiglu_fused')


def vit(arch=ARCH, img_size=64, patch_size=16, **kwargs):
    return EoMTViT(arch=arch, img_size=img_size, patch_size=patch_size, **kwargs).eval()


def tokens(model, x):
    with torch.no_grad():
        return model(x)[0]


# ----------------------------------------------------------------------------- structure
def test_output_shape_and_other_input_sizes():
    model = randomise(vit())
    assert model(torch.randn(2, 3, 64, 64))[0].shape == (2, 5 + 4 * 4, 64)
    assert model.num_prefix_tokens == 5 and model.patch_resolution == (4, 4)
    # Another input size: the position grid is resized on the fly, as timm's dynamic_img_size
    # (antialiased bicubic) and as checkpoints of another grid are on load.
    x = torch.randn(1, 3, 96, 64)
    assert model(x)[0].shape == (1, 5 + 6 * 4, 64)
    with torch.no_grad():
        seq, grid = model.embed(x)
        conv = model.patch_embed.projection
        patches = F.conv2d(x, conv.weight, conv.bias, stride=16).flatten(2).transpose(1, 2)
    assert grid == (6, 4)
    torch.testing.assert_close(seq[:, 5:],
                               patches + resample_pos_embed(model.pos_embed, (4, 4), (6, 4)))


def test_token_layout():
    """[CLS, registers, patches]; position embeddings are added to patch tokens only."""
    model = randomise(vit())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        seq, grid = model.embed(x)
        conv = model.patch_embed.projection
        patches = F.conv2d(x, conv.weight, conv.bias, stride=16).flatten(2).transpose(1, 2)
    assert grid == (4, 4)
    assert torch.equal(seq[:, 0], model.cls_token[:, 0].expand(2, -1))
    assert torch.equal(seq[:, 1:5], model.register_tokens.expand(2, -1, -1))
    torch.testing.assert_close(seq[:, 5:], patches + model.pos_embed)


def test_arch_zoo_and_errors():
    assert EoMTViT.arch_zoo['large']['num_layers'] == 24
    assert EoMTViT.arch_zoo['giant']['ffn_type'] == 'swiglu_fused'
    with pytest.raises(KeyError, match='arch'):
        EoMTViT(arch='huge')
    with pytest.raises(KeyError, match='num_heads'):
        EoMTViT(arch=dict(embed_dims=64, num_layers=2, feedforward_channels=128))


def test_get_layer_depth():
    """docs/method.md §4: block i gets decay^(n-1-i), the stem decay^(n-1), the final norm 1."""
    model = vit()  # n = 4 blocks -> 5 depths
    depth = model.get_layer_depth
    for name in ('cls_token', 'register_tokens', 'pos_embed', 'patch_embed.projection.weight'):
        assert depth(name) == (1, 5)
    assert [depth(f'layers.{i}.attn.qkv.weight')[0] for i in range(4)] == [1, 2, 3, 4]
    assert depth('ln1.weight') == (4, 5)
    assert depth('backbone.layers.2.ln1.weight', prefix='backbone.') == (3, 5)
    assert depth('queries.weight', prefix='backbone.') == (4, 5)  # not in the ViT


# ----------------------------------------------------------------------------- resampling
def test_patch_embed_resample_is_flexivit():
    """Upsampling kernels 14 -> 16: patchifying the bicubically resized patch with the new
    kernel gives what the old kernel gives on the original patch (FlexiViT)."""
    weight = torch.randn(8, 3, 14, 14)
    new = resample_patch_embed(weight, (16, 16))
    assert new.shape == (8, 3, 16, 16) and new.dtype == weight.dtype
    patches = torch.randn(5, 3, 14, 14)
    resized = F.interpolate(patches, size=(16, 16), mode='bicubic', antialias=True)
    torch.testing.assert_close(torch.einsum('nchw,ochw->no', resized, new),
                               torch.einsum('nchw,ochw->no', patches, weight),
                               atol=1e-4, rtol=1e-4)
    assert resample_patch_embed(weight, (14, 14)) is weight


def test_pos_embed_resample():
    pos = torch.randn(1, 37 * 37, 8)
    new = resample_pos_embed(pos, (37, 37), (40, 20))
    assert new.shape == (1, 40 * 20, 8)
    grid = pos.reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(40, 20), mode='bicubic', antialias=True)
    torch.testing.assert_close(new, expected.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match='pos_embed'):
        resample_pos_embed(pos, (36, 36), (40, 40))


# ----------------------------------------------------------------------------- formats
FORMATS = {
    'mmpretrain': to_mmpretrain,
    'timm': to_timm,
    'transformers': to_transformers,
}


@pytest.mark.parametrize('arch', [ARCH, SWIGLU], ids=['mlp', 'swiglu'])
@pytest.mark.parametrize('fmt', sorted(FORMATS))
def test_load_state_dict_of_each_format(fmt, arch):
    source = randomise(vit(arch))
    state = FORMATS[fmt](source.state_dict())
    assert detect_dinov2_format(state) == (fmt, '')
    model = vit(arch)
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    # mmpretrain's DINOv2 has no registers: they keep their initial values.
    assert result.missing_keys == (['register_tokens'] if fmt == 'mmpretrain' else [])
    if fmt == 'mmpretrain':
        model.register_tokens.data.copy_(source.register_tokens)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(tokens(model, x), tokens(source, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize('prefix', ['backbone.', 'dinov2.', 'model.'])
def test_common_prefix_and_foreign_keys_are_dropped(prefix):
    source = randomise(vit())
    state = {prefix + k: v for k, v in to_timm(source.state_dict()).items()}
    state['head.fc.weight'] = torch.zeros(10, 64)  # a classifier beside the ViT
    model = vit()
    model.load_state_dict(state)  # strict
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize('fmt', sorted(FORMATS))
def test_init_cfg_pretrained_from_file_resamples(fmt, tmp_path):
    """A DINOv2-like checkpoint at patch 14 with a 6x6 grid into a patch-16 model at 64."""
    source = randomise(vit(img_size=84, patch_size=14))
    state = FORMATS[fmt](source.state_dict())
    path = tmp_path / 'dinov2.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in state.items()}}, path)
    init_cfg = dict(type='Pretrained', checkpoint=str(path))
    if fmt == 'mmpretrain':  # no registers: strict loading names them
        with pytest.raises(ValueError, match=r'(?s)missing keys \(1\):\s+register_tokens'):
            vit(init_cfg=init_cfg).init_weights()
        init_cfg['strict'] = False
    model = vit(init_cfg=init_cfg)
    model.init_weights()
    assert model.patch_embed.projection.weight.shape == (64, 3, 16, 16)
    torch.testing.assert_close(
        model.patch_embed.projection.weight,
        resample_patch_embed(source.patch_embed.projection.weight.detach(), (16, 16)))
    torch.testing.assert_close(model.pos_embed,
                               resample_pos_embed(source.pos_embed.detach(), (6, 6), (4, 4)))
    torch.testing.assert_close(model.cls_token, source.cls_token)  # [CLS] position folded in
    torch.testing.assert_close(model.layers[3].ffn.gamma2.weight,
                               source.layers[3].ffn.gamma2.weight)


def test_own_format_is_left_alone_or_regridded():
    source = randomise(vit())
    state = source.state_dict()
    same = dict(state)
    assert fit_backbone_state(vit(), same, '').format == 'mmeomt'
    assert all(same[k] is state[k] for k in state)  # nothing converted, nothing copied

    bigger = vit(img_size=128)  # e.g. a 640-crop checkpoint loaded at 1280
    bigger.load_state_dict(state)
    torch.testing.assert_close(bigger.pos_embed,
                               resample_pos_embed(source.pos_embed.detach(), (4, 4), (8, 8)))
    # A converted checkpoint without registers (from mmpretrain) is still ours: no [CLS] fold.
    state = convert_dinov2(to_mmpretrain(source.state_dict()))
    assert detect_dinov2_format(state) == ('mmeomt', '')


def test_partial_and_unknown_state_dicts():
    model = vit()
    partial = {'ln1.weight': torch.full((64, ), 2.0)}
    model.load_state_dict(partial, strict=False)  # our names, no patch kernel: loaded as is
    assert torch.equal(model.ln1.weight, partial['ln1.weight'])
    unknown = {'encoder.conv.weight': torch.zeros(1)}
    assert model.load_state_dict(unknown, strict=False).unexpected_keys == ['encoder.conv.weight']
    with pytest.raises(ValueError, match='(?s)Unrecognised DINOv2.*encoder.conv.weight'):
        load_checkpoint_to_model(model, unknown)
    state = to_timm(vit().state_dict())
    state['blocks.0.attn.rope.freqs'] = torch.zeros(4)
    result = model.load_state_dict(state, strict=False)  # the rest of the timm layout loads
    assert result.unexpected_keys == ['blocks.0.attn.rope.freqs'] and not result.missing_keys
    with pytest.raises(ValueError, match='blocks.0.attn.rope.freqs'):
        load_checkpoint_to_model(model, state)
    with pytest.raises(ValueError, match='several ViTs'):
        convert_dinov2({'a.patch_embed.proj.weight': torch.zeros(1, 3, 14, 14),
                        'b.patch_embed.proj.weight': torch.zeros(1, 3, 14, 14)})
