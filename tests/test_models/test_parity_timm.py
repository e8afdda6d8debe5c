"""EoMTViT + our DINOv2 conversion == timm's DINOv2 ViT built at patch 16 from the same weights.

EoMT (the authors' code) builds its encoder with
``timm.create_model('vit_*_patch14_reg4_dinov2', img_size=crop, patch_size=16)``, and timm's
``checkpoint_filter_fn`` resamples the 14x14 kernels (FlexiViT) and the 37x37 position grid on
load.  Here timm does that from a checkpoint file and we do it with ``convert_dinov2`` / on load;
the token features must agree.  Random weights, small depth, no downloads.
"""
import pytest
import torch

from mmeomt.models import EoMTViT
from mmeomt.models.checkpoint import convert_dinov2, detect_dinov2_format
from reference import run_reference

DEPTH = 4
SMALL = dict(embed_dims=384, num_layers=DEPTH, num_heads=6, feedforward_channels=1536)
# timm's giant: SwiGLU with hidden int(48 * 5.33334) = 256 packed (2 x 128); ours 192 -> 128.
GIANTISH = dict(embed_dims=48, num_layers=2, num_heads=2, feedforward_channels=192,
                ffn_type='swiglu_fused')

TIMM_SNIPPET = '''
import timm

def randomise(model):
    # Random init leaves LayerScale at 1e-5; make every parameter matter.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith('gamma'):
                p.copy_(0.3 + 0.1 * noise)
            else:
                p.add_(0.05 * noise)
    return model

def build(name, path=None, **kwargs):
    if path is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    return timm.create_model(name, num_classes=0, **kwargs).eval()

images = inputs['images']
cases = dict(small=('vit_small_patch14_reg4_dinov2', dict(depth=%(depth)d)),
             giant=('vit_giant_patch14_reg4_dinov2', dict(depth=2, embed_dim=48, num_heads=2)))
for case, (name, kwargs) in cases.items():
    model14 = randomise(build(name, img_size=518, **kwargs))
    state = model14.state_dict()
    torch.save(state, work_dir / f'{case}.pth')
    outputs[f'{case}_timm_state'] = state
    model16 = build(name, work_dir / f'{case}.pth', img_size=128, patch_size=16, **kwargs)
    with torch.no_grad():
        outputs[f'{case}_tokens'] = model16.forward_features(images)

    # The original DINOv2 release: [CLS] position inside pos_embed, register_tokens,
    # mask_token, mlp.w12/w3 for giant; timm converts it with _convert_dinov2.
    original = {k: v for k, v in state.items() if k not in ('reg_token', 'cls_token', 'pos_embed')}
    cls_pos = torch.randn(1, 1, state['cls_token'].shape[-1])
    original.update(register_tokens=state['reg_token'],
                    mask_token=torch.zeros(1, cls_pos.shape[-1]),
                    cls_token=state['cls_token'] - cls_pos,
                    pos_embed=torch.cat([cls_pos, state['pos_embed']], dim=1))
    if case == 'giant':
        original = {k.replace('mlp.fc1', 'mlp.w12').replace('mlp.fc2', 'mlp.w3'): v
                    for k, v in original.items()}
    outputs[f'{case}_original_state'] = original
    torch.save(original, work_dir / f'{case}_original.pth')
    model16 = build(name, work_dir / f'{case}_original.pth', img_size=128, patch_size=16, **kwargs)
    with torch.no_grad():
        outputs[f'{case}_original_tokens'] = model16.forward_features(images)

# EoMT's real case: 37x37 -> 40x40 (upsampling) at the 640 crop; compare the parameters.
model16 = build('vit_small_patch14_reg4_dinov2', work_dir / 'small.pth', img_size=640,
                patch_size=16, depth=%(depth)d)
outputs['pos_embed_640'] = model16.pos_embed.detach()
outputs['kernel_16'] = model16.patch_embed.proj.weight.detach()
''' % dict(depth=DEPTH)


@pytest.fixture(scope='module')
def timm_outputs(tmp_path_factory):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 128, 128)
    out = run_reference(TIMM_SNIPPET, tmp_path_factory.mktemp('timm'),
                        inputs=dict(images=images))
    out['images'] = images
    return out


def _ours(arch, state, images):
    model = EoMTViT(arch=arch, img_size=128, patch_size=16).eval()
    model.load_state_dict(state)  # strict: every key converted, none left over
    with torch.no_grad():
        return model(images)[0]


@pytest.mark.parametrize('case,arch', [('small', SMALL), ('giant', GIANTISH)])
@pytest.mark.parametrize('source', ['timm', 'original'])
def test_tokens_match_timm(timm_outputs, case, arch, source):
    state = timm_outputs[f'{case}_{source}_state']
    assert detect_dinov2_format(state) == (source.replace('original', 'dinov2'), '')
    # On load (EoMTViT's pre-hook) and through the public converter: same weights.
    tokens = _ours(arch, state, timm_outputs['images'])
    converted = convert_dinov2(state, dict(patch_size=16, img_size=128))
    assert torch.equal(_ours(arch, converted, timm_outputs['images']), tokens)
    expected = timm_outputs[f'{case}_tokens' if source == 'timm' else f'{case}_original_tokens']
    assert tokens.shape == expected.shape == (2, 5 + 8 * 8, arch['embed_dims'])
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=0)


def test_resampling_at_640_matches_timm(timm_outputs):
    """DINOv2's 37x37 grid upsampled to 40x40 and 14x14 kernels to 16x16, as timm."""
    converted = convert_dinov2(timm_outputs['small_timm_state'], dict(patch_size=16, img_size=640))
    assert converted['pos_embed'].shape == (1, 40 * 40, 384)
    torch.testing.assert_close(converted['pos_embed'], timm_outputs['pos_embed_640'],
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(converted['patch_embed.projection.weight'],
                               timm_outputs['kernel_16'], atol=1e-5, rtol=0)
