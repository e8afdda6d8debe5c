"""tools/demo.py end to end, shortened to fit CI: per task, a short training lifts the task's
real metric (PQ, COCO mask AP, mIoU) far above what the same model scores untrained, and the
``image | ground truth | prediction`` PNGs are written.

What is shortened, and why: the full demo trains a from-scratch ViT-T for ~8 minutes and is
evaluated on the held-out split; a from-scratch ViT needs far more than the ~20 s of CPU a CI
job can give each task before it generalises to unseen scenes.  So the CI run trains 120
iterations on 8 synthetic images with the flip and the scale jitter switched off and is
evaluated, with the task's real evaluator, on those training images: this checks that targets,
loss, masked attention and its annealing, deep supervision, optimiser, schedule,
post-processing and metric fit together so that the model learns what it is shown.  The
untrained score is measured the same way (same config, data and evaluator, no training step).
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import re

import mmcv
import pytest
import torch

from mmeomt.datasets.synthetic import generate_synthetic_dataset

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NUM_TRAIN, NUM_VAL, NUM_VIS = 8, 2, 2
# Per task: training iterations, and how far above the untrained score the trained one must be,
# in the metric's own unit (PQ and mIoU in percent, COCO mask AP in [0, 1]).
SHORT_RUN = {
    'panoptic': dict(iters=120, margin=50.0),
    'instance': dict(iters=120, margin=0.50),
    'semantic': dict(iters=120, margin=40.0),
}


def load_demo():
    spec = importlib.util.spec_from_file_location('mmeomt_tool_demo',
                                                  osp.join(ROOT, 'tools', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo()


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic') / 'data')
    generate_synthetic_dataset(root, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0)
    return root


@pytest.fixture
def two_threads():
    # The suite runs single-threaded (conftest.py); a minute of training is faster on both cores.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def evaluate_on_train_split(task, data_root):
    """``--cfg-options`` that evaluate (and draw) the training images."""
    if task == 'semantic':
        return ['val_dataloader.dataset.data_prefix.img_path=images/training',
                'val_dataloader.dataset.data_prefix.seg_map_path=annotations/training']
    coco = osp.join(data_root, 'coco', '')
    kind = 'panoptic' if task == 'panoptic' else 'instances'
    options = [f'val_dataloader.dataset.ann_file=annotations/{kind}_train2017.json',
               'val_dataloader.dataset.data_prefix.img=train2017/',
               f'val_evaluator.ann_file={coco}annotations/{kind}_train2017.json']
    if task == 'panoptic':
        options += ['val_dataloader.dataset.data_prefix.seg=annotations/panoptic_train2017/',
                    f'val_evaluator.seg_prefix={coco}annotations/panoptic_train2017/']
    return options


def resolved_schedule(cfg):
    """The warm-ups and annealing windows, in iterations, that a Runner built from ``cfg`` uses
    (the scheduler gets ``end = max_iters`` as the Runner gives it)."""
    from mmengine.optim import OptimWrapper

    from mmeomt.registry import HOOKS, PARAM_SCHEDULERS
    groups = [dict(params=[torch.nn.Parameter(torch.zeros(1))], vit=vit) for vit in (False, True)]
    wrapper = OptimWrapper(torch.optim.SGD(groups, lr=1.0))
    [scheduler] = cfg.param_scheduler
    scheduler = PARAM_SCHEDULERS.build(
        dict(scheduler, optimizer=wrapper, end=cfg.train_cfg.max_iters))
    hook = HOOKS.build(cfg.default_hooks.mask_annealing)
    return dict(warmups=(scheduler.warmup_iters, scheduler.vit_warmup_iters),
                annealing=hook.resolve(cfg.train_cfg.max_iters))


@pytest.mark.parametrize('task', ['panoptic', 'instance', 'semantic'])
def test_main_job_schedule_is_unchanged(task):
    """The config's fractions give the demo's iterations of its measured runs (README)."""
    cfg = demo.build_config(demo.parse_args(['--task', task]))
    assert cfg.train_cfg.max_iters == 1100
    assert resolved_schedule(cfg) == dict(warmups=(20, 40), annealing=([183, 733], [366, 916]))


@pytest.mark.parametrize('option', [['--max-iters', '220'],
                                    ['--cfg-options', 'train_cfg.max_iters=220']])
def test_run_length_rescales_the_schedule(option):
    """A fifth of the run: every warm-up and window a fifth as long (rounded half up)."""
    cfg = demo.build_config(demo.parse_args(option))
    assert cfg.train_cfg.max_iters == 220
    assert resolved_schedule(cfg) == dict(warmups=(4, 8), annealing=([37, 147], [73, 183]))


def flip_index(task):
    """Position of RandomFlip in the task's training pipeline (RandomResize follows it): after
    the loading transforms, and the colour jitter in the semantic one."""
    return 3 if task == 'semantic' else 2


def demo_args(task, data_root, work_dir, backbone='dinov2'):
    # The flip and the scale jitter off.
    flip = flip_index(task)
    return [
        '--task', task, '--backbone', backbone, '--data-root', data_root, '--work-dir', work_dir,
        '--num-train', str(NUM_TRAIN), '--num-val', str(NUM_VAL),
        '--max-iters', str(SHORT_RUN[task]['iters']), '--num-vis', str(NUM_VIS),
        '--cfg-options', f'train_dataloader.dataset.pipeline.{flip}.prob=0.0',
        f'train_dataloader.dataset.pipeline.{flip + 1}.ratio_range=(1.0,1.0)',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'default_hooks.logger.interval=40', *evaluate_on_train_split(task, data_root)
    ]


def untrained_metric(task, data_root, work_dir, backbone='dinov2'):
    from mmeomt.utils.tool_config import build_runner

    cfg = demo.build_config(demo.parse_args(demo_args(task, data_root, work_dir, backbone)))
    # The options above address transforms by position: check they hit the intended ones.
    pipeline = cfg.train_dataloader.dataset.pipeline
    flip = flip_index(task)
    assert pipeline[flip]['type'] == 'RandomFlip' and pipeline[flip]['prob'] == 0.0
    assert pipeline[flip + 1]['type'] == 'RandomResize'
    assert tuple(pipeline[flip + 1]['ratio_range']) == (1.0, 1.0)
    return build_runner(cfg).val()[demo.HEADLINE[task][0]]


@pytest.mark.parametrize('task', ['panoptic', 'instance', 'semantic'])
def test_short_demo_learns_and_draws(task, data_root, tmp_path, two_threads):
    key = demo.HEADLINE[task][0]
    before = untrained_metric(task, data_root, str(tmp_path / 'untrained'))

    work_dir = str(tmp_path / 'demo')
    metrics = demo.main(demo_args(task, data_root, work_dir))
    after = metrics[key]
    assert after >= before + SHORT_RUN[task]['margin'], (
        f'{task}: {key} = {after:.4f} after {SHORT_RUN[task]["iters"]} iterations, '
        f'{before:.4f} untrained')

    # Validation in batches of 3 (semantic: images of different sizes padded together) gives
    # the metrics of batch 1.
    from mmeomt.utils.tool_config import build_runner
    cfg = demo.build_config(demo.parse_args(
        demo_args(task, data_root, str(tmp_path / 'batched')) + ['val_dataloader.batch_size=3']))
    assert cfg.val_dataloader.batch_size == 3
    cfg.load_from = osp.join(work_dir, f'iter_{SHORT_RUN[task]["iters"]}.pth')
    batched = build_runner(cfg).val()
    assert batched[key] == pytest.approx(after, abs=1e-6)

    # The run announced its duration early (measured on its first iterations) and its end.
    # (mmengine reuses the logger, and its file, of a runner built in the same second: the
    # untrained evaluation's, so every log under tmp_path is read.)
    log = ''.join(open(path, encoding='utf-8').read()
                  for path in glob.glob(osp.join(str(tmp_path), '**', '*.log'), recursive=True))
    assert re.search(r'\[demo\] ETA: \d+ ms per iteration on this machine -> training done '
                     r'in ~[\d.]+ min, evaluation ~\d+ s, the whole run ~[\d.]+ min', log)
    assert re.search(r'\[demo\] done in [\d.]+ min \(estimated [\d.]+ min\)', log)

    with open(osp.join(work_dir, 'metrics.json'), encoding='utf-8') as f:
        summary = json.load(f)
    assert summary['task'] == task
    assert summary['metrics'][key] == pytest.approx(after)

    vis_dir = osp.join(work_dir, 'vis')
    names = sorted(os.listdir(vis_dir))
    assert len(names) == NUM_VIS
    image_dir = osp.join(data_root, 'ade', 'images', 'training') if task == 'semantic' \
        else osp.join(data_root, 'coco', 'train2017')
    for name in names:
        path = osp.join(vis_dir, name)
        assert name.startswith(f'{task}_') and name.endswith('.png')
        assert osp.getsize(path) > 0
        # image | ground truth | prediction, each the size of the input image.
        panels = mmcv.imread(path)
        image = mmcv.imread(osp.join(image_dir, name[len(task) + 1:-len('.png')] + '.jpg'))
        assert panels.shape == (image.shape[0], 3 * image.shape[1], 3)
        assert panels[:, 2 * image.shape[1]:].std() > 0  # the prediction panel is drawn


def test_short_demo_learns_on_the_dinov3_backbone(data_root, tmp_path, two_threads):
    """The same short panoptic run on the DINOv3-style encoder (RoPE, no position embedding)
    learns as well; the DINOv2 cases above check the drawing and batching, which do not
    depend on the encoder."""
    task, key = 'panoptic', demo.HEADLINE['panoptic'][0]
    before = untrained_metric(task, data_root, str(tmp_path / 'untrained'), 'dinov3')
    work_dir = str(tmp_path / 'demo')
    cfg = demo.build_config(demo.parse_args(demo_args(task, data_root, work_dir, 'dinov3')))
    assert cfg.model.eomt.backbone.type == 'mmeomt.DINOv3ViT'
    after = demo.main(demo_args(task, data_root, work_dir, 'dinov3'))[key]
    assert after >= before + SHORT_RUN[task]['margin'], (
        f'DINOv3 {task}: {key} = {after:.4f} after {SHORT_RUN[task]["iters"]} iterations, '
        f'{before:.4f} untrained')


@pytest.mark.parametrize('task', ['instance', 'semantic'])
def test_dinov3_demo_configs_build(task, data_root, tmp_path):
    from mmeomt.utils.tool_config import build_runner
    cfg = demo.build_config(demo.parse_args(demo_args(task, data_root, str(tmp_path), 'dinov3')))
    runner = build_runner(cfg)
    assert type(runner.model.eomt.backbone).__name__ == 'DINOv3ViT'
