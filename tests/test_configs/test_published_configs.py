"""Every published config loads, matches the published models (docs/method.md §8), builds its
model and runs its train and test pipelines on a fake data root."""
import copy
import glob
import json
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DATASETS, MODELS, init_default_scope
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs', 'eomt')
NAME = re.compile(r'eomt_vit-(?P<size>[sblg])_8xb2-(?P<epochs>\d+)e_(?P<task>[a-z0-9-]+)-'
                  r'(?P<crop>\d+)\.py$')

# docs/method.md §8: the paper's models plus the ADE20K-panoptic g / 1280 models of the authors'
# model zoo.
PUBLISHED = {
    'eomt_vit-s_8xb2-24e_coco-panoptic-640.py', 'eomt_vit-b_8xb2-24e_coco-panoptic-640.py',
    'eomt_vit-l_8xb2-12e_coco-panoptic-640.py', 'eomt_vit-g_8xb2-12e_coco-panoptic-640.py',
    'eomt_vit-l_8xb2-12e_coco-panoptic-1280.py', 'eomt_vit-g_8xb2-12e_coco-panoptic-1280.py',
    'eomt_vit-l_8xb2-31e_ade20k-panoptic-640.py', 'eomt_vit-g_8xb2-31e_ade20k-panoptic-640.py',
    'eomt_vit-l_8xb2-31e_ade20k-panoptic-1280.py', 'eomt_vit-g_8xb2-31e_ade20k-panoptic-1280.py',
    'eomt_vit-l_8xb2-12e_coco-instance-640.py', 'eomt_vit-l_8xb2-12e_coco-instance-1280.py',
    'eomt_vit-l_8xb2-31e_ade20k-semantic-512.py',
    'eomt_vit-l_8xb2-107e_cityscapes-semantic-1024.py',
}
CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, 'eomt_vit-*.py')))

ARCH = dict(s=('small', 3, 384), b=('base', 3, 768), l=('large', 4, 1024), g=('giant', 5, 1536))
CLASSES = {  # task -> (num_classes, things, stuff, dataset type)
    'coco-panoptic': (133, 80, 53, 'mmeomt.CocoPanopticDataset'),
    'coco-instance': (80, 80, 0, 'mmeomt.CocoDataset'),
    'ade20k-panoptic': (150, 100, 50, 'mmeomt.ADE20KPanopticDataset'),
    'ade20k-semantic': (150, None, None, 'mmeomt.ADE20KDataset'),
    'cityscapes-semantic': (19, None, None, 'mmeomt.CityscapesDataset'),
}
# Iterations per epoch at batch 16 (see configs/eomt/_base_/schedules).
ITERS_PER_EPOCH = {'coco-panoptic': 7391, 'coco-instance': 7329, 'ade20k-panoptic': 1263,
                   'ade20k-semantic': 1263, 'cityscapes-semantic': 185}
# Today's windows of the published configs (the authors' iterations, docs/method.md §2).
ANNEALING = {
    ('s', 'coco-panoptic'): ([29564, 73910, 118256], [59128, 103474, 147820]),
    ('b', 'coco-panoptic'): ([29564, 73910, 118256], [59128, 103474, 147820]),
    ('l', 'coco-panoptic'): ([14782, 29564, 44346, 59128], [29564, 44346, 59128, 73910]),
    ('l', 'coco-instance'): ([14782, 29564, 44346, 59128], [29564, 44346, 59128, 73910]),
    ('g', 'coco-panoptic'): ([14782, 25869, 36955, 48042, 59128],
                             [29564, 40651, 51737, 62824, 73910]),
    ('l', 'ade20k-panoptic'): ([6520, 13040, 19560, 26080], [13040, 19560, 26080, 32600]),
    ('l', 'ade20k-semantic'): ([6520, 13040, 19560, 26080], [13040, 19560, 26080, 32600]),
    ('g', 'ade20k-panoptic'): ([6520, 11410, 16300, 21190, 26080],
                               [13040, 17930, 22820, 27710, 32600]),
    ('l', 'cityscapes-semantic'): ([3317, 6634, 9951, 13268], [6634, 9951, 13268, 16585]),
}
TINY_ARCH = dict(embed_dims=32, num_layers=6, num_heads=2, feedforward_channels=64)


def parse(path):
    match = NAME.search(osp.basename(path))
    assert match, f'{osp.basename(path)} does not follow the naming scheme'
    info = match.groupdict()
    info['crop'] = int(info['crop'])
    info['epochs'] = int(info['epochs'])
    return info


def test_every_published_model_has_a_config():
    assert {osp.basename(c) for c in CONFIGS} == PUBLISHED


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_matches_the_method(path):
    info = parse(path)
    cfg = Config.fromfile(path)
    semantic = info['task'].endswith('semantic')
    num_classes, things, stuff, dataset_type = CLASSES[info['task']]
    arch, num_blocks, _ = ARCH[info['size']]
    model = cfg.model

    assert cfg.default_scope == ('mmseg' if semantic else 'mmdet')
    assert cfg.custom_imports.imports == ['mmeomt']
    assert model.type == ('mmeomt.EoMTSegmentor' if semantic else 'mmeomt.EoMTDetector')
    backbone = model.eomt.backbone
    assert backbone.type == 'mmeomt.EoMTViT' and backbone.arch == arch
    assert backbone.patch_size == 16 and backbone.num_register_tokens == 4
    img_size = backbone.img_size
    assert tuple(img_size) == (info['crop'], ) * 2 if not isinstance(img_size, int) \
        else img_size == info['crop']
    assert model.eomt.num_blocks == num_blocks
    assert model.eomt.num_queries == (100 if semantic else 200)
    assert model.eomt.num_classes == model.loss.num_classes == num_classes
    if semantic:
        assert model.num_classes == num_classes
        assert model.test_cfg == dict(mode='window', crop_size=(info['crop'], ) * 2)
        assert tuple(model.data_preprocessor.size) == (info['crop'], ) * 2
    else:
        assert (model.num_things_classes, model.num_stuff_classes) == (things, stuff)
        instance = info['task'] == 'coco-instance'
        assert model.test_cfg.panoptic_on is not instance
        assert model.test_cfg.instance_on is instance
        assert model.test_cfg.object_mask_thr == 0.8 and model.test_cfg.iou_thr == 0.8
    data_pre = model.data_preprocessor
    assert data_pre.mean == [123.675, 116.28, 103.53] and data_pre.bgr_to_rgb is True

    # DINOv2-with-registers weights, unless initialised from a COCO checkpoint.
    if info['task'] == 'ade20k-panoptic':
        assert backbone.init_cfg is None
        name = f"coco_panoptic_eomt_{arch}_{info['crop']}"
        assert cfg.load_from == (f'https://huggingface.co/tue-mps/{name}/resolve/main/'
                                 'pytorch_model.bin')
        assert model.skip_mismatched == ['eomt.class_head']
    else:
        timm_name = {'small': 'small', 'base': 'base', 'large': 'large', 'giant': 'giant'}[arch]
        assert backbone.init_cfg.type == 'Pretrained'
        assert backbone.init_cfg.checkpoint == (
            f'https://huggingface.co/timm/vit_{timm_name}_patch14_reg4_dinov2.lvd142m/'
            'resolve/main/pytorch_model.bin')

    # Data: the crop of the name everywhere.
    crop = (info['crop'], ) * 2
    train = cfg.train_dataloader
    assert train.batch_size == 2 and train.sampler.type == 'InfiniteSampler'
    assert train.dataset.type == dataset_type == cfg.val_dataloader.dataset.type
    steps = {t.type: t for t in train.dataset.pipeline}
    ratio = (0.5, 2.0) if semantic else (0.1, 2.0)
    assert tuple(steps['RandomResize'].scale) == crop
    assert tuple(steps['RandomResize'].ratio_range) == ratio
    assert tuple(steps['Pad'].size) == crop and steps['Pad'].pad_val['img'] == 0
    assert tuple(steps['RandomCrop'].crop_size) == crop
    colour_jitter = 'PhotoMetricDistortion' in steps
    assert colour_jitter is not info['task'].startswith('coco')  # docs/method.md §5

    # Optimisation and schedule.
    optim = cfg.optim_wrapper
    assert optim.constructor == 'mmeomt.EoMTOptimWrapperConstructor'
    assert optim.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=0.05,
                                   betas=(0.9, 0.999), eps=1e-8)
    assert optim.paramwise_cfg.layer_decay_rate == 0.8
    assert optim.clip_grad == dict(max_norm=0.01, norm_type=2)
    # The total batch the lr is meant for (8 GPUs x 2); tools/train.py --auto-scale-lr.
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    [scheduler] = cfg.param_scheduler
    assert scheduler.type == 'mmeomt.TwoStageWarmupPolyLR' and 'end' not in scheduler
    assert (scheduler.warmup_iters, scheduler.vit_warmup_iters, scheduler.power) == (500, 1000,
                                                                                   0.9)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == info['epochs'] * ITERS_PER_EPOCH[info['task']]

    # Hooks.
    annealing = cfg.default_hooks.mask_annealing
    assert annealing.type == 'mmeomt.MaskAnnealingHook' and annealing.power == 0.9
    # Stated as fractions of the run, resolved to exactly the iterations of the authors.
    assert annealing.start_iters is None and annealing.end_iters is None
    starts, ends = annealing_hook(cfg).resolve(cfg.train_cfg.max_iters)
    assert (starts, ends) == ANNEALING[(info['size'], info['task'])]
    assert len(starts) == num_blocks
    assert max(ends) < cfg.train_cfg.max_iters
    assert cfg.default_hooks.checkpoint.type == 'mmeomt.AtomicCheckpointHook'
    assert cfg.visualizer.type == ('SegLocalVisualizer' if semantic else 'DetLocalVisualizer')


def annealing_hook(cfg):
    from mmeomt.registry import HOOKS
    return HOOKS.build(dict(cfg.default_hooks.mask_annealing, type='mmeomt.MaskAnnealingHook'))


@pytest.mark.parametrize('max_iters', [1000, 250000])
@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_annealing_follows_max_iters(path, max_iters):
    """``--cfg-options train_cfg.max_iters=N``: the windows keep their fractions of the run."""
    info = parse(path)
    cfg = Config.fromfile(path)
    published = cfg.train_cfg.max_iters
    cfg.merge_from_dict({'train_cfg.max_iters': max_iters})
    starts, ends = annealing_hook(cfg).resolve(cfg.train_cfg.max_iters)
    scale = max_iters / published
    # Each within the roundings of today's iteration (to +-0.5) and of the new one.
    for resolved, today in zip(starts + ends, sum(ANNEALING[(info['size'], info['task'])], [])):
        assert abs(resolved - today * scale) <= 0.5 + 0.5 * scale + 1e-9
    assert max(ends) < max_iters


def tiny_model_cfg(cfg):
    model = copy.deepcopy(cfg.model)
    model.eomt.backbone.arch = TINY_ARCH
    model.eomt.backbone.init_cfg = None
    return model


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_model_builds(path):
    """The published structure with a tiny ViT (the arch is the only change)."""
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(tiny_model_cfg(cfg))
    assert model.eomt.num_blocks == cfg.model.eomt.num_blocks
    assert model.eomt.backbone.img_size == (parse(path)['crop'], ) * 2
    assert model.eomt.attn_mask_probs.shape == (cfg.model.eomt.num_blocks, )


def test_small_model_builds_for_real():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'eomt_vit-s_8xb2-24e_coco-panoptic-640.py'))
    init_default_scope(cfg.default_scope)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.eomt.backbone.init_cfg = None  # no download
    model = MODELS.build(model_cfg)
    vit = model.eomt.backbone
    assert (vit.embed_dims, vit.num_layers, vit.num_heads) == (384, 12, 6)
    assert vit.pos_embed.shape == (1, 40 * 40, 384)
    assert model.eomt.queries.weight.shape == (200, 384)
    assert model.eomt.class_head.out_features == 134
    backbone_params = sum(p.numel() for p in vit.parameters())
    assert 21e6 < backbone_params < 23e6  # DINOv2-S


# ---------------------------------------------------------------------------------------------
# Pipelines on a fake data root: one 48x64 image per split.
H, W = 48, 64


def _image(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def _panoptic_root(root, ann_names, img_dirs, seg_dirs, classes, num_things):
    """COCO-panoptic-format data: a thing square and a stuff band."""
    categories = [dict(id=i + 1, name=name, isthing=int(i < num_things))
                  for i, name in enumerate(classes)]
    ids = np.zeros((H, W), np.uint8)
    ids[5:25, 5:25] = 1
    ids[30:, :] = 2
    segments = [
        dict(id=1, category_id=1, iscrowd=0, bbox=[5, 5, 20, 20], area=400),
        dict(id=2, category_id=num_things + 1, iscrowd=0, bbox=[0, 30, W, H - 30],
             area=W * (H - 30)),
    ]
    for ann_name, img_dir, seg_dir in zip(ann_names, img_dirs, seg_dirs):
        (root / img_dir).mkdir(parents=True, exist_ok=True)
        (root / seg_dir).mkdir(parents=True, exist_ok=True)
        _image(root / img_dir / '000001.jpg')
        rgb = np.stack([ids, np.zeros_like(ids), np.zeros_like(ids)], -1)  # id = R + 256 G + ..
        Image.fromarray(rgb).save(root / seg_dir / '000001.png')
        (root / ann_name).parent.mkdir(parents=True, exist_ok=True)
        (root / ann_name).write_text(json.dumps(dict(
            images=[dict(id=1, file_name='000001.jpg', height=H, width=W)],
            annotations=[dict(image_id=1, file_name='000001.png', segments_info=segments)],
            categories=categories)))


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    from mmdet.datasets import ADE20KPanopticDataset, CocoDataset, CocoPanopticDataset
    base = tmp_path_factory.mktemp('data')
    roots = {}

    coco = base / 'coco'
    _panoptic_root(coco, ['annotations/panoptic_train2017.json',
                          'annotations/panoptic_val2017.json'], ['train2017', 'val2017'],
                   ['annotations/panoptic_train2017', 'annotations/panoptic_val2017'],
                   CocoPanopticDataset.METAINFO['classes'], 80)
    instances = dict(
        images=[dict(id=1, file_name='000001.jpg', height=H, width=W)],
        annotations=[dict(id=1, image_id=1, category_id=1, iscrowd=0, area=400,
                          bbox=[5, 5, 20, 20], segmentation=[[5, 5, 25, 5, 25, 25, 5, 25]])],
        categories=[dict(id=i + 1, name=n) for i, n in enumerate(CocoDataset.METAINFO['classes'])])
    for split in ('train2017', 'val2017'):
        (coco / 'annotations' / f'instances_{split}.json').write_text(json.dumps(instances))
    roots['coco-panoptic'] = roots['coco-instance'] = coco

    ade_pan = base / 'ade_panoptic'
    _panoptic_root(ade_pan, ['ade20k_panoptic_train.json', 'ade20k_panoptic_val.json'],
                   ['images/training', 'images/validation'],
                   ['ade20k_panoptic_train', 'ade20k_panoptic_val'],
                   ADE20KPanopticDataset.METAINFO['classes'], 100)
    roots['ade20k-panoptic'] = ade_pan

    labels = np.zeros((H, W), np.uint8)
    labels[:24] = 3
    labels[24:] = 7
    ade = base / 'ade'
    for split in ('training', 'validation'):
        (ade / 'images' / split).mkdir(parents=True)
        (ade / 'annotations' / split).mkdir(parents=True)
        _image(ade / 'images' / split / 'ADE_1.jpg')
        Image.fromarray(labels).save(ade / 'annotations' / split / 'ADE_1.png')
    roots['ade20k-semantic'] = ade

    city = base / 'cityscapes'
    for split in ('train', 'val'):
        (city / 'leftImg8bit' / split / 'aachen').mkdir(parents=True)
        (city / 'gtFine' / split / 'aachen').mkdir(parents=True)
        _image(city / 'leftImg8bit' / split / 'aachen' / 'aachen_1_leftImg8bit.png')
        Image.fromarray(labels).save(
            city / 'gtFine' / split / 'aachen' / 'aachen_1_gtFine_labelTrainIds.png')
    roots['cityscapes-semantic'] = city
    return roots


def build_dataset(cfg, split, root):
    dataset_cfg = copy.deepcopy(cfg[f'{split}_dataloader'].dataset)
    dataset_cfg.data_root = str(root)
    return DATASETS.build(dataset_cfg)


# One config per distinct (dataset, crop): the others share these pipelines.
PIPELINE_CONFIGS = [
    'eomt_vit-l_8xb2-12e_coco-panoptic-640.py', 'eomt_vit-l_8xb2-12e_coco-panoptic-1280.py',
    'eomt_vit-l_8xb2-12e_coco-instance-640.py', 'eomt_vit-l_8xb2-12e_coco-instance-1280.py',
    'eomt_vit-l_8xb2-31e_ade20k-panoptic-640.py', 'eomt_vit-l_8xb2-31e_ade20k-panoptic-1280.py',
    'eomt_vit-l_8xb2-31e_ade20k-semantic-512.py',
    'eomt_vit-l_8xb2-107e_cityscapes-semantic-1024.py',
]


def test_pipeline_configs_cover_all_datasets():
    keys = {(c.train_dataloader.dataset.type, str(c.train_dataloader.dataset.pipeline))
            for c in map(Config.fromfile, CONFIGS)}
    assert len(keys) == len(PIPELINE_CONFIGS)


@pytest.mark.parametrize('name', PIPELINE_CONFIGS)
def test_train_and_test_pipelines_run(name, data_roots):
    info = parse(name)
    crop = info['crop']
    semantic = info['task'].endswith('semantic')
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    init_default_scope(cfg.default_scope)
    root = data_roots[info['task']]

    train = build_dataset(cfg, 'train', root)[0]
    assert tuple(train['inputs'].shape) == (3, crop, crop)
    sample = train['data_samples']
    if semantic:
        assert tuple(sample.gt_sem_seg.data.shape) == (1, crop, crop)
    else:
        assert sample.gt_instances.masks.masks.shape[1:] == (crop, crop)
        assert (sample.gt_instances.masks.areas > 0).all()  # emptied masks are dropped
        if info['task'].endswith('panoptic'):
            assert tuple(sample.gt_sem_seg.sem_seg.shape) == (1, crop, crop)

    test = build_dataset(cfg, 'val', root)[0]
    meta = test['data_samples'].metainfo
    assert meta['ori_shape'] == (H, W)
    if semantic:
        # Short side = crop; windows run along the long side.
        assert tuple(test['inputs'].shape[1:]) == (crop, round(W * crop / H))
    else:
        # Fit the crop, pad bottom/right with pixel 0; img_shape is the un-padded size.
        resized = (round(H * crop / W), crop)
        assert tuple(test['inputs'].shape) == (3, crop, crop)
        assert meta['img_shape'] == resized
        assert tuple(meta['pad_shape'][:2]) == (crop, crop)
        assert (test['inputs'][:, resized[0]:] == 0).all()


@pytest.mark.parametrize('name', ['eomt_vit-l_8xb2-12e_coco-panoptic-640.py',
                                  'eomt_vit-l_8xb2-12e_coco-instance-640.py',
                                  'eomt_vit-l_8xb2-31e_ade20k-semantic-512.py'])
def test_pipeline_output_feeds_the_model(name, data_roots):
    """A tiny model of the config takes its pipeline's batches in train and test mode."""
    check_pipeline_feeds_model(osp.join(CONFIG_DIR, name), parse(name)['task'], data_roots)


def check_pipeline_feeds_model(path, task, data_roots):
    """The config's training batch gives finite losses and its test batch a prediction at the
    image's size, through a tiny model of the config (also the DINOv3 configs' check)."""
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(cfg))
    root = data_roots[task]
    train = build_dataset(cfg, 'train', root)
    batch = model.data_preprocessor(
        dict(inputs=[train[0]['inputs']], data_samples=[train[0]['data_samples']]), True)
    losses = model(**batch, mode='loss')
    assert all(torch.isfinite(v).all() for v in losses.values())

    model.eval()
    test = build_dataset(cfg, 'val', root)[0]
    batch = model.data_preprocessor(dict(inputs=[test['inputs']],
                                         data_samples=[test['data_samples']]), False)
    with torch.no_grad():
        [result] = model(**batch, mode='predict')
    if task.endswith('semantic'):
        assert tuple(result.pred_sem_seg.data.shape[1:]) == (H, W)
    elif task.endswith('panoptic'):
        assert tuple(result.pred_panoptic_seg.sem_seg.shape[1:]) == (H, W)
    else:
        assert tuple(result.pred_instances.masks.shape[1:]) == (H, W)


def test_ade20k_panoptic_starts_from_coco_without_its_class_head(tmp_path):
    """What the runner does with the ADE20K config's load_from (EoMTRunner: mmeomt's loader,
    strict, with the adapter's skip_mismatched), here from a COCO model trained with mmeomt."""
    from mmeomt.models.checkpoint import load_checkpoint
    coco_cfg = Config.fromfile(osp.join(CONFIG_DIR, 'eomt_vit-l_8xb2-12e_coco-panoptic-640.py'))
    ade_cfg = Config.fromfile(osp.join(CONFIG_DIR, 'eomt_vit-l_8xb2-31e_ade20k-panoptic-640.py'))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    coco = MODELS.build(tiny_model_cfg(coco_cfg))
    coco.eomt.attn_mask_probs.zero_()  # the end of COCO training
    torch.save(dict(state_dict=coco.state_dict()), tmp_path / 'coco.pth')
    ade = MODELS.build(tiny_model_cfg(ade_cfg))
    class_head = copy.deepcopy(ade.eomt.class_head.state_dict())

    load_checkpoint(ade, str(tmp_path / 'coco.pth'), map_location='cpu', strict=True)
    loaded, source = ade.state_dict(), coco.state_dict()
    for key, value in loaded.items():
        if key.startswith('eomt.class_head.'):
            assert torch.equal(value, class_head[key[len('eomt.class_head.'):]])
            assert value.shape[0] == 151 and source[key].shape[0] == 134
        else:
            assert torch.equal(value, source[key]), key


def test_ade20k_panoptic_class_order_follows_mmdets_converter():
    """checkpoint_class_order maps mmdet's things-first ADE20K panoptic labels to the authors'
    ADE20K-150 indices: derived here from the category list of mmdet's own ade20k2coco.py (the
    script that writes the dataset these configs read), by class name."""
    import ast

    import mmdet
    from mmdet.datasets.ade20k import ADE20KPanopticDataset
    converter = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'dataset_converters',
                         'ade20k2coco.py')
    with open(converter) as f:
        ade150 = next(ast.literal_eval(node.value) for node in ast.parse(f.read()).body
                      if isinstance(node, ast.Assign)
                      and getattr(node.targets[0], 'id', '') == 'ORIGINAL_CATEGORIES')
    expected = [ade150.index(name) for name in ADE20KPanopticDataset.METAINFO['classes']]
    # The stuff part is the authors' stuff_classes list (docs/method.md §5).
    assert expected[100:][:8] == [0, 1, 2, 3, 4, 5, 6, 9]
    for path in glob.glob(osp.join(CONFIG_DIR, 'eomt_vit-*_ade20k-panoptic-*.py')):
        assert Config.fromfile(path).model.checkpoint_class_order == expected, path
