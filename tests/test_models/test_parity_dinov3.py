"""DINOv3ViT / EoMT on DINOv3 == transformers 5.x and timm on converted weights.

Small random models are built in subprocesses (``.venv/reference-tf5`` for transformers 5.x,
``.venv/reference`` for timm 1.0.31), their state dicts converted by
:mod:`mmeomt.models.checkpoint.dinov3` and loaded strictly.  Compared, to 1e-4:

* ``DINOv3ViTModel`` (MLP and SwiGLU) and timm's
  ``vit_*_patch16_dinov3[_qkvb]`` (with and without query/value biases; SwiGLU): final-normed
  tokens at the "training" size 64x64 and at 96x80, where the RoPE grid follows the input;
* ``EomtDinov3ForUniversalSegmentation``: class and mask logits with masked attention off and on
  (probability 1 in every block, deterministic, intermediate predictions included), at 64 and
  96, from its own checkpoint and from the same weights written as the authors' delta
  checkpoint plus the DINOv3 base.
* the original release's layout (``storage_tokens``, ``qkv.bias`` whose key part is masked),
  written from the timm weights with a random key bias.
"""
import pytest
import torch

from mmeomt.models import DINOv3ViT, EoMT
from mmeomt.models.checkpoint.dinov3 import (convert_dinov3,
                                             convert_eomt_dinov3_checkpoint,
                                             detect_dinov3_format,
                                             detect_eomt_dinov3_format)
from reference import run_reference

DIMS, DEPTH, HEADS, FFN, IMG, NUM_BLOCKS, QUERIES, CLASSES = 64, 4, 2, 256, 64, 2, 10, 5
SIZES = [(IMG, IMG), (96, 80)]

PERTURB = '''
g = torch.Generator().manual_seed(1)
with torch.no_grad():  # make biases, norms, LayerScale and tokens non-trivial
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
'''

HF_VIT_SNIPPET = f'''
from transformers import DINOv3ViTConfig, DINOv3ViTModel
for name, extra in (('mlp', {{}}),
                    ('swiglu', dict(use_gated_mlp=True, hidden_act='silu'))):
    config = DINOv3ViTConfig(hidden_size={DIMS}, num_hidden_layers={DEPTH},
                             num_attention_heads={HEADS}, intermediate_size={FFN},
                             num_register_tokens=4, image_size={IMG}, patch_size=16, **extra)
    model = DINOv3ViTModel(config).eval()
{PERTURB.replace(chr(10), chr(10) + '    ')}
    outputs[name] = dict(state_dict=model.state_dict(), tokens=[])
    for images in inputs['images']:
        with torch.no_grad():
            outputs[name]['tokens'].append(model(pixel_values=images).last_hidden_state)
'''

TIMM_SNIPPET = f'''
import timm
for name in ('vit_small_patch16_dinov3_qkvb', 'vit_small_patch16_dinov3',
             'vit_small_plus_patch16_dinov3'):
    model = timm.create_model(name, pretrained=False, num_classes=0, embed_dim={DIMS},
                              depth={DEPTH}, num_heads={HEADS}, img_size={IMG}).eval()
{PERTURB.replace(chr(10), chr(10) + '    ')}
    outputs[name] = dict(state_dict=model.state_dict(), tokens=[])
    for images in inputs['images']:
        with torch.no_grad():
            outputs[name]['tokens'].append(model.forward_features(images))
'''

HF_EOMT_SNIPPET = f'''
from transformers import EomtDinov3Config, EomtDinov3ForUniversalSegmentation

def build(size):
    config = EomtDinov3Config(hidden_size={DIMS}, num_hidden_layers={DEPTH},
                              num_attention_heads={HEADS}, intermediate_size={FFN},
                              image_size=size, patch_size=16, num_blocks={NUM_BLOCKS},
                              num_queries={QUERIES}, num_labels={CLASSES}, layer_norm_eps=1e-5)
    return EomtDinov3ForUniversalSegmentation(config).eval()

model = build({IMG})
{PERTURB}
state_dict = model.state_dict()
outputs['state_dict'] = state_dict
for size, images in zip(({IMG}, 96), inputs['images']):
    model = build(size)  # transformers' grid is fixed by image_size; the weights are the same
    model.load_state_dict(state_dict)
    calls = []
    predict = model.predict
    def recording_predict(tokens):
        calls.append(predict(tokens))
        return calls[-1]
    model.predict = recording_predict
    for name, prob in (('unmasked', 0.0), ('masked', 1.0)):
        model.attn_mask_probs.fill_(prob)
        calls.clear()
        with torch.no_grad():
            out = model(pixel_values=images)
        assert torch.equal(out.masks_queries_logits, calls[-1][0])
        outputs[(name, size)] = [tuple(c) for c in calls]
'''


def _images(sizes):
    torch.manual_seed(0)
    return [torch.randn(2, 3, *s) for s in sizes]


@pytest.fixture(scope='module')
def hf_vit(tmp_path_factory):
    images = _images(SIZES)
    out = run_reference(HF_VIT_SNIPPET, tmp_path_factory.mktemp('hf_vit'),
                        inputs=dict(images=images), folder='reference-tf5')
    return out, images


@pytest.fixture(scope='module')
def timm_vit(tmp_path_factory):
    images = _images(SIZES)
    out = run_reference(TIMM_SNIPPET, tmp_path_factory.mktemp('timm_vit'),
                        inputs=dict(images=images))
    return out, images


@pytest.fixture(scope='module')
def hf_eomt(tmp_path_factory):
    images = _images([(IMG, IMG), (96, 96)])
    out = run_reference(HF_EOMT_SNIPPET, tmp_path_factory.mktemp('hf_eomt'),
                        inputs=dict(images=images), folder='reference-tf5')
    return out, images


def _vit(ffn_type='mlp', ffn=FFN, **kwargs):
    arch = dict(embed_dims=DIMS, num_layers=DEPTH, num_heads=HEADS, feedforward_channels=ffn,
                ffn_type=ffn_type)
    return DINOv3ViT(arch=arch, **kwargs).eval()


def _check_tokens(model, images, expected):
    for x, ref in zip(images, expected):
        with torch.no_grad():
            ours = model(x)[0]
        assert ours.shape == ref.shape == (2, 5 + x.shape[2] * x.shape[3] // 256, DIMS)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- backbones
@pytest.mark.parametrize('variant', ['mlp', 'swiglu'])
def test_parity_transformers_dinov3_vit(hf_vit, variant):
    out, images = hf_vit
    sd = out[variant]['state_dict']
    assert detect_dinov3_format(sd) == ('transformers', '')
    model = _vit(variant)
    model.load_state_dict(sd)  # converted by the pre-hook, strict
    _check_tokens(model, images, out[variant]['tokens'])


@pytest.mark.parametrize('name', ['vit_small_patch16_dinov3_qkvb', 'vit_small_patch16_dinov3',
                                  'vit_small_plus_patch16_dinov3'])
def test_parity_timm_dinov3(timm_vit, name):
    out, images = timm_vit
    sd = out[name]['state_dict']
    assert detect_dinov3_format(sd) == ('timm', '')
    # timm sizes S+'s SwiGLU itself (2/3 of the MLP ratio, aligned to 8)
    model = _vit('swiglu' if 'plus' in name else 'mlp', sd['blocks.0.mlp.fc2.weight'].shape[1])
    model.load_state_dict(sd)  # no q/v biases in the plain variants: zeros, the same function
    _check_tokens(model, images, out[name]['tokens'])


def _timm_to_original(sd):
    """timm's DINOv3 state dict in the original release's names (the inverse of timm's own
    filter), with a random key bias that the original masks out."""
    out = {'mask_token': torch.zeros(1, DIMS), 'rope_embed.periods': torch.ones(DIMS // 8)}
    g = torch.Generator().manual_seed(2)
    for key, value in sd.items():
        key = key.replace('reg_token', 'storage_tokens').replace('gamma_1', 'ls1.gamma')
        key = key.replace('gamma_2', 'ls2.gamma').replace('mlp.fc1_g', 'mlp.w1')
        key = key.replace('mlp.fc1_x', 'mlp.w2')
        if key.endswith('attn.q_bias'):
            block = key[:-len('q_bias')]
            k_bias = torch.randn(DIMS, generator=g)
            out[block + 'qkv.bias'] = torch.cat([value, k_bias, sd[
                block.replace('storage_tokens', 'reg_token') + 'v_bias']])
            out[block + 'qkv.bias_mask'] = torch.cat([torch.ones(DIMS), torch.zeros(DIMS),
                                                      torch.ones(DIMS)])
            continue
        if key.endswith('attn.v_bias'):
            continue
        out[key] = value
    if any('mlp.w1' in k for k in out):
        out = {k.replace('mlp.fc2', 'mlp.w3'): v for k, v in out.items()}
    return out


def test_original_release_layout(timm_vit):
    out, images = timm_vit
    name = 'vit_small_patch16_dinov3_qkvb'
    original = {'backbone.' + k: v for k, v in _timm_to_original(out[name]['state_dict']).items()}
    assert detect_dinov3_format(original) == ('dinov3', 'backbone.')
    model = _vit()
    model.load_state_dict(convert_dinov3(original))
    _check_tokens(model, images, out[name]['tokens'])


def test_nonzero_key_bias_is_refused(hf_vit):
    """RoPE rotates a key bias with the key, so it cannot be dropped; DINOv3 has none."""
    sd = dict(hf_vit[0]['mlp']['state_dict'])
    sd['model.layer.1.attention.k_proj.bias'] = torch.full((DIMS, ), 0.1)
    with pytest.raises(ValueError, match=r'layers\.1\.attn\.k_proj has a non-zero bias'):
        convert_dinov3(sd)
    sd['model.layer.1.attention.k_proj.bias'] = torch.zeros(DIMS)  # a zero one is harmless
    assert 'layers.1.attn.q_bias' in convert_dinov3(sd)


# ----------------------------------------------------------------------------- EoMT core
def _eomt(state_dict):
    backbone = dict(type='mmeomt.DINOv3ViT',
                    arch=dict(embed_dims=DIMS, num_layers=DEPTH, num_heads=HEADS,
                              feedforward_channels=FFN))
    model = EoMT(backbone, num_classes=CLASSES, num_queries=QUERIES, num_blocks=NUM_BLOCKS)
    model.load_state_dict(state_dict)  # strict
    return model.eval()


def _compare(model, images, expected, prob):
    model.attn_mask_probs.fill_(prob)
    with torch.no_grad():
        masks, classes = model(images)
    assert len(masks) == len(classes) == len(expected) == (1 if prob == 0 else NUM_BLOCKS + 1)
    size = images.shape[-1]
    for (mask, cls), (ref_mask, ref_cls) in zip(zip(masks, classes), expected):
        assert mask.shape == ref_mask.shape == (2, QUERIES, size // 4, size // 4)
        assert cls.shape == ref_cls.shape == (2, QUERIES, CLASSES + 1)
        torch.testing.assert_close(cls, ref_cls, atol=1e-4, rtol=0)
        torch.testing.assert_close(mask, ref_mask, atol=1e-4, rtol=0)


def _check_eomt(model, hf_eomt):
    out, images = hf_eomt
    for size, x in zip((IMG, 96), images):
        _compare(model, x, out[('unmasked', size)], prob=0.)
        _compare(model, x, out[('masked', size)], prob=1.)
    # The masks restrict attention: the masked final prediction differs from the unmasked one.
    assert not torch.allclose(out[('masked', IMG)][-1][0], out[('unmasked', IMG)][-1][0],
                              atol=1e-3)


def test_parity_transformers_eomt_dinov3(hf_eomt):
    sd = hf_eomt[0]['state_dict']
    assert detect_eomt_dinov3_format(sd) == 'transformers'
    _check_eomt(_eomt(convert_eomt_dinov3_checkpoint(sd)), hf_eomt)


def hf_to_authors(sd):
    """A transformers EoMT-DINOv3 state dict in the authors' names (``network.*``)."""
    out = {'network.encoder.pixel_mean': torch.zeros(1, 3, 1, 1),
           'network.encoder.pixel_std': torch.ones(1, 3, 1, 1),
           'criterion.empty_weight': torch.ones(CLASSES + 1)}
    rules = [('embeddings.', 'network.encoder.backbone.patch_embed.'),
             ('layers.', 'network.encoder.backbone.blocks.'),
             ('layernorm.', 'network.encoder.backbone.norm.'), ('query.', 'network.q.'),
             ('class_predictor.', 'network.class_head.'),
             ('mask_head.fc1.', 'network.mask_head.0.'),
             ('mask_head.fc2.', 'network.mask_head.2.'),
             ('mask_head.fc3.', 'network.mask_head.4.'),
             ('upscale_block.block.', 'network.upscale.'),
             ('attn_mask_probs', 'network.attn_mask_probs')]
    for key, value in sd.items():
        if key.startswith('criterion.'):
            continue
        for old, new in rules:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key.replace('.layernorm2d.', '.norm.')] = value
    return out


def split_delta(authors):
    """The authors' release: backbone deltas to a (random) DINOv3 base in transformers 4.x
    names, everything else as trained.  Returns ``(delta, base)``."""
    g = torch.Generator().manual_seed(3)
    prefix = 'network.encoder.backbone.'
    delta, base = {}, {}
    for key, value in authors.items():
        if not key.startswith(prefix):
            delta[key] = value
            continue
        name = key[len(prefix):]
        name = name.replace('patch_embed.', 'embeddings.').replace('blocks.', 'layer.')
        base[name] = torch.randn(value.shape, generator=g)
        delta[key] = value - base[name]
    base['embeddings.mask_token'] = torch.zeros(1, 1, DIMS)
    return delta, base


def test_parity_authors_delta_checkpoint(hf_eomt):
    delta, base = split_delta(hf_to_authors(hf_eomt[0]['state_dict']))
    assert detect_eomt_dinov3_format(delta) == 'authors'
    converted = convert_eomt_dinov3_checkpoint(delta, base=base)
    _check_eomt(_eomt(converted), hf_eomt)
    with pytest.raises(ValueError, match=r'deltas to the DINOv3 weights .*missing.* pass them '
                                         r'with --base'):
        convert_eomt_dinov3_checkpoint(delta, base_hint='pass them with --base')


def test_delta_recipe_converter_then_load_from(hf_eomt, tmp_path):
    """docs/dinov3.md's recipe: ``eomt2mmeomt.py DELTA OUT --base DINOV3`` and the output as
    ``load_from`` of a published DINOv3 config (here with the test's small sizes) gives the
    transformers model's logits."""
    import importlib.util
    import os.path as osp

    from mmengine.config import Config
    from mmengine.registry import MODELS as REGISTRY
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        'eomt2mmeomt', osp.join(root, 'tools', 'model_converters', 'eomt2mmeomt.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    delta, base = split_delta(hf_to_authors(hf_eomt[0]['state_dict']))
    torch.save(delta, tmp_path / 'pytorch_model.bin')
    torch.save(base, tmp_path / 'dinov3.pth')
    out = tmp_path / 'eomt_dinov3.pth'
    assert tool.main([str(tmp_path / 'pytorch_model.bin'), str(out)]) == 1  # no --base
    assert tool.main([str(tmp_path / 'pytorch_model.bin'), str(out), '--base',
                      str(tmp_path / 'dinov3.pth')]) == 0

    cfg = Config.fromfile(osp.join(root, 'configs', 'eomt',
                                   'eomt_dinov3-vit-l_8xb2-12e_coco-panoptic-640.py'))
    init_default_scope(cfg.default_scope)
    model_cfg = cfg.model
    model_cfg.eomt.backbone.arch = dict(embed_dims=DIMS, num_layers=DEPTH, num_heads=HEADS,
                                        feedforward_channels=FFN)
    model_cfg.eomt.backbone.init_cfg = None
    model_cfg.eomt.update(num_blocks=NUM_BLOCKS, num_queries=QUERIES, num_classes=CLASSES)
    model_cfg.loss.num_classes = CLASSES
    model_cfg.update(num_things_classes=3, num_stuff_classes=2)
    detector = REGISTRY.build(model_cfg)
    load_checkpoint(detector, str(out), map_location='cpu', strict=True)
    _compare(detector.eomt.eval(), hf_eomt[1][0], hf_eomt[0][('unmasked', IMG)], prob=0.)


def _small_detector(base_checkpoint):
    from mmengine.config import Config
    from mmengine.registry import MODELS as REGISTRY
    from mmengine.registry import init_default_scope
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'eomt',
                                   'eomt_dinov3-vit-l_8xb2-12e_coco-panoptic-640.py'))
    init_default_scope(cfg.default_scope)
    model_cfg = cfg.model
    model_cfg.eomt.backbone.arch = dict(embed_dims=DIMS, num_layers=DEPTH, num_heads=HEADS,
                                        feedforward_channels=FFN)
    model_cfg.eomt.backbone.init_cfg = (None if base_checkpoint is None else dict(
        type='Pretrained', checkpoint=str(base_checkpoint)))
    model_cfg.eomt.update(num_blocks=NUM_BLOCKS, num_queries=QUERIES, num_classes=CLASSES)
    model_cfg.loss.num_classes = CLASSES
    model_cfg.update(num_things_classes=3, num_stuff_classes=2)
    return REGISTRY.build(model_cfg)


def test_delta_loads_directly_with_the_base_of_the_config(hf_eomt, tmp_path):
    """The authors' delta as ``load_from`` (any load): the DINOv3 weights that the backbone's
    init_cfg names are read and added on load; without them the error names them."""
    delta, base = split_delta(hf_to_authors(hf_eomt[0]['state_dict']))
    torch.save(base, tmp_path / 'dinov3.pth')
    detector = _small_detector(tmp_path / 'dinov3.pth')
    detector.load_state_dict(delta)  # strict
    _compare(detector.eomt.eval(), hf_eomt[1][0], hf_eomt[0][('unmasked', IMG)], prob=0.)

    missing = _small_detector(tmp_path / 'no' / 'dinov3.pth')
    with pytest.raises(ValueError, match=r'deltas to the DINOv3 weights .*missing.*names '
                                         r'\S*no/dinov3\.pth: it could not be read'):
        missing.load_state_dict(delta)
    with pytest.raises(ValueError, match="backbone's init_cfg checkpoint \\(it has none\\)"):
        _small_detector(None).load_state_dict(delta)
