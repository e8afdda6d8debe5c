"""Every published EoMT-DINOv3 config loads, says what the authors' DINOv3 configs say, builds
its model and feeds it from its pipelines.

The data side is that of the DINOv2 config of the same task and crop (checked for equality), so
the pipelines themselves are covered by test_published_configs.py; here one config per task
runs them into a tiny DINOv3 model.
"""
import copy
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from test_published_configs import (CLASSES, CONFIG_DIR, ITERS_PER_EPOCH,
                                    check_pipeline_feeds_model, data_roots,  # noqa: F401
                                    tiny_model_cfg)  # (data_roots: a fixture)

NAME = re.compile(r'eomt_dinov3-vit-(?P<size>[sbl])_8xb2-(?P<epochs>\d+)e_(?P<task>[a-z0-9-]+)-'
                  r'(?P<crop>\d+)\.py$')
CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, 'eomt_dinov3-vit-*.py')))
# The authors' model_zoo/dinov3.md: COCO panoptic S/B (2x) / L 640, L 1280; ADE20K semantic
# L 512; COCO instance L 640 / 1280.
PUBLISHED = {
    'eomt_dinov3-vit-s_8xb2-24e_coco-panoptic-640.py',
    'eomt_dinov3-vit-b_8xb2-24e_coco-panoptic-640.py',
    'eomt_dinov3-vit-l_8xb2-12e_coco-panoptic-640.py',
    'eomt_dinov3-vit-l_8xb2-12e_coco-panoptic-1280.py',
    'eomt_dinov3-vit-l_8xb2-16e_ade20k-semantic-512.py',
    'eomt_dinov3-vit-l_8xb2-12e_coco-instance-640.py',
    'eomt_dinov3-vit-l_8xb2-12e_coco-instance-1280.py',
}
ARCH = dict(s=('small', 3, 'vits16'), b=('base', 3, 'vitb16'), l=('large', 4, 'vitl16'))
# The authors' configs/dinov3 (attn_mask_annealing_{start,end}_steps).
ANNEALING = {
    ('s', 'coco-panoptic'): ([0, 73910, 118256], [3000, 103474, 147820]),
    ('b', 'coco-panoptic'): ([0, 73910, 118256], [3000, 103474, 147820]),
    ('l', 'coco-panoptic'): ([0, 29564, 44346, 59128], [3000, 44346, 59128, 73910]),
    ('l', 'coco-instance'): ([14782, 29564, 44346, 59128], [29564, 44346, 59128, 73910]),
    ('l', 'ade20k-semantic'): ([0, 6520, 9780, 13040], [3000, 9780, 13040, 16300]),
}
# The DINOv2 config whose data, test mode and adapter a DINOv3 config shares.
DINOV2_EPOCHS = {'coco-panoptic': {'s': 24, 'b': 24, 'l': 12}, 'coco-instance': {'l': 12},
                 'ade20k-semantic': {'l': 31}}
def parse(path):
    match = NAME.search(osp.basename(path))
    assert match, f'{osp.basename(path)} does not follow the naming scheme'
    info = match.groupdict()
    info['crop'], info['epochs'] = int(info['crop']), int(info['epochs'])
    return info


def dinov2_config(info):
    epochs = DINOV2_EPOCHS[info['task']][info['size']]
    return Config.fromfile(osp.join(
        CONFIG_DIR, f"eomt_vit-{info['size']}_8xb2-{epochs}e_{info['task']}-{info['crop']}.py"))


def test_every_published_model_has_a_config():
    assert {osp.basename(c) for c in CONFIGS} == PUBLISHED


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_matches_the_authors(path):
    info = parse(path)
    cfg = Config.fromfile(path)
    semantic = info['task'].endswith('semantic')
    arch, num_blocks, hf_name = ARCH[info['size']]
    backbone = cfg.model.eomt.backbone
    assert backbone.type == 'mmeomt.DINOv3ViT' and backbone.arch == arch
    assert backbone.patch_size == 16 and backbone.num_register_tokens == 4
    assert 'img_size' not in backbone  # RoPE: nothing is sized to the crop
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'https://huggingface.co/facebook/dinov3-{hf_name}-'
        'pretrain-lvd1689m/resolve/main/model.safetensors')
    assert cfg.model.eomt.num_blocks == num_blocks
    assert cfg.model.eomt.num_queries == (100 if semantic else 200)
    assert cfg.model.eomt.num_classes == CLASSES[info['task']][0]

    # Everything but the encoder and the optimisation is the DINOv2 config's.
    dinov2 = dinov2_config(info)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
                'default_scope', 'visualizer'):
        assert cfg[key] == dinov2[key], key
    ours, theirs = copy.deepcopy(cfg.model), copy.deepcopy(dinov2.model)
    for model in (ours, theirs):
        del model.eomt['backbone']
    assert ours == theirs

    # The authors' DINOv3 optimisation: lr 2e-4, warm-up 2000 + 3000; COCO without layer decay
    # in the query blocks, ADE20K without any (llrd 1.0).
    optim = cfg.optim_wrapper
    assert optim.optimizer == dict(type='AdamW', lr=2e-4, weight_decay=0.05,
                                   betas=(0.9, 0.999), eps=1e-8)
    if semantic:
        assert optim.paramwise_cfg == dict(layer_decay_rate=1.0)
    else:
        assert optim.paramwise_cfg == dict(layer_decay_rate=0.8, decay_query_blocks=False)
    assert optim.clip_grad == dict(max_norm=0.01, norm_type=2)
    [scheduler] = cfg.param_scheduler
    assert scheduler.type == 'mmeomt.TwoStageWarmupPolyLR' and 'end' not in scheduler
    assert (scheduler.warmup_iters, scheduler.vit_warmup_iters, scheduler.power) == (2000, 3000,
                                                                                   0.9)
    assert cfg.train_cfg.max_iters == info['epochs'] * ITERS_PER_EPOCH[info['task']]
    assert info['epochs'] == {'coco-panoptic': 24 if info['size'] in 'sb' else 12,
                              'coco-instance': 12, 'ade20k-semantic': 16}[info['task']]
    annealing = cfg.default_hooks.mask_annealing
    assert (annealing.start_iters, annealing.end_iters) == ANNEALING[(info['size'],
                                                                       info['task'])]
    assert max(annealing.end_iters) < cfg.train_cfg.max_iters


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_model_builds(path):
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(tiny_model_cfg(cfg))
    assert type(model.eomt.backbone).__name__ == 'DINOv3ViT'
    assert model.eomt.attn_mask_probs.shape == (cfg.model.eomt.num_blocks, )


def test_large_model_builds_for_real():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'eomt_dinov3-vit-l_8xb2-12e_coco-panoptic-640.py'))
    init_default_scope(cfg.default_scope)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.eomt.backbone.init_cfg = None  # no download
    with torch.device('meta'):
        model = MODELS.build(model_cfg)
    vit = model.eomt.backbone
    assert (vit.embed_dims, vit.num_layers, vit.num_heads) == (1024, 24, 16)
    backbone_params = sum(p.numel() for p in vit.parameters())
    assert 300e6 < backbone_params < 305e6  # DINOv3-L/16: about 0.3 B


@pytest.mark.parametrize('name', ['eomt_dinov3-vit-l_8xb2-12e_coco-panoptic-640.py',
                                  'eomt_dinov3-vit-l_8xb2-12e_coco-instance-640.py',
                                  'eomt_dinov3-vit-l_8xb2-16e_ade20k-semantic-512.py'])
def test_pipeline_output_feeds_the_model(name, data_roots):  # noqa: F811
    """A tiny DINOv3 model of the config takes its pipeline's batches in train and test mode."""
    check_pipeline_feeds_model(osp.join(CONFIG_DIR, name), parse(name)['task'], data_roots)