"""docs/custom_dataset.md's worked example, run: a user's own panoptic dataset (another class
subset under other names and category ids, in the custom template's layout) fine-tuned from an
EoMT checkpoint with a new class head, following the template
``configs/eomt/custom/eomt_vit-l_custom-panoptic-640.py``.

What CI changes, and why: the template's EoMT-L at 640 and its released COCO weights are far out
of reach of a CI job on 2 CPU cores (and of its network), so the checkpoint is a ViT-T trained
by this test on the synthetic shapes, and the model, crop, optimiser and warm-up become the
synthetic demo's (``configs/eomt/synthetic/``).  Everything a user writes stays the template's:
the edited lines, the dataset, its class names and ids, the class-head swap, the evaluator and
the run length that the annealing follows.  As in tests/test_e2e/test_demo.py the runs are
evaluated on the training images: a few dozen iterations do not generalise to unseen scenes.

The user's data comes from tools/dataset_converters/synthetic_to_custom.py, the doc's first
step.  The two other templates (instance, semantic) are checked on the same converted data: they load,
their datasets read the user's files and their pipelines feed the model a training step.
"""
import importlib.util
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from mmeomt.datasets.synthetic import generate_synthetic_dataset

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TEMPLATES = osp.join(ROOT, 'configs', 'eomt', 'custom')
TINY = osp.join(ROOT, 'configs', 'eomt', 'synthetic', 'eomt_vit-t_synthetic-{}.py')
NUM_TRAIN = 8
PRETRAIN_ITERS = 120
FINETUNE_ITERS = 80
PQ_MARGIN = 40.0


def load_tool(path):
    spec = importlib.util.spec_from_file_location('mmeomt_tool_' + osp.basename(path)[:-3],
                                                  osp.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The user's dataset: a class subset of the synthetic shapes, other names and category ids.
converter = load_tool('tools/dataset_converters/synthetic_to_custom.py')


def edit_template(name: str, tmp_path, **lines) -> str:
    """A copy of a custom template with the lines of its "what you change" block replaced, as a
    user edits them (``key=<python literal>``); fails if a line is not in the template."""
    with open(osp.join(TEMPLATES, name), encoding='utf-8') as f:
        text = f.read()
    for key, value in lines.items():
        # A value may continue on indented lines (the template's load_from URL does).
        pattern = re.compile(rf'^{key} = .*?(?=\n(?!\s))', re.M | re.S)
        assert pattern.search(text), f'{name} has no line "{key} = ..."'
        text = pattern.sub(lambda _: f'{key} = {value!r}', text, count=1)
    # The copy lives elsewhere: its _base_ must still reach the published configs.
    text = text.replace("'../", repr(osp.join(ROOT, 'configs', 'eomt', ''))[:-1])
    path = str(tmp_path / name)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    return path


def at_ci_scale(cfg: Config, task: str) -> Config:
    """The template's config with the synthetic demo's ViT-T, crop, optimiser and warm-up (see
    the module docstring); data, classes, heads, evaluator and run length stay the template's."""
    tiny = Config.fromfile(TINY.format(task))
    for key in ('backbone', 'num_queries', 'num_blocks'):
        cfg.model.eomt[key] = tiny.model.eomt[key]
    cfg.model.loss.num_points = tiny.model.loss.num_points
    cfg.model.data_preprocessor = tiny.model.data_preprocessor
    if task == 'semantic':
        cfg.model.test_cfg = tiny.model.test_cfg  # the window size
    elif task == 'instance':
        # The top-k pool of 20 queries x the user's classes is below the published 100.
        cfg.model.test_cfg.max_per_image = min(
            100, cfg.model.eomt.num_queries * cfg.model.eomt.num_classes)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.pipeline = tiny[loader].dataset.pipeline
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_dataloader.batch_size = tiny.train_dataloader.batch_size
    cfg.optim_wrapper = tiny.optim_wrapper
    cfg.param_scheduler = tiny.param_scheduler
    # ViT-T has 2 masked blocks (EoMT-L 4): the demo's annealing windows, fractions of the run.
    cfg.default_hooks.mask_annealing = tiny.default_hooks.mask_annealing
    cfg.default_hooks.logger.interval = 40
    return cfg


@pytest.fixture(scope='module')
def user_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('custom')
    generate_synthetic_dataset(str(root / 'synthetic'), num_train=NUM_TRAIN, num_val=0, seed=0)
    counts = converter.synthetic_to_custom(str(root / 'synthetic'), str(root / 'my_data'),
                                           val_from_train=True)
    assert counts == dict(train=NUM_TRAIN, val=NUM_TRAIN)
    return root


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def pretrained_checkpoint(root, work_dir) -> str:
    """A ViT-T EoMT trained on all eight synthetic classes: the "released model" to start from."""
    from mmeomt.utils.tool_config import build_runner
    cfg = Config.fromfile(TINY.format('panoptic'))
    coco = osp.join(str(root / 'synthetic'), 'coco', '')
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = coco
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_dataloader.dataset.ann_file = 'annotations/panoptic_train2017.json'
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=PRETRAIN_ITERS,
                         val_interval=10**9)
    cfg.default_hooks.checkpoint.interval = PRETRAIN_ITERS
    cfg.val_cfg = cfg.val_evaluator = cfg.val_dataloader = None
    cfg.test_cfg = cfg.test_evaluator = cfg.test_dataloader = None
    cfg.work_dir = str(work_dir)
    build_runner(cfg).train()
    return osp.join(str(work_dir), f'iter_{PRETRAIN_ITERS}.pth')


def test_worked_example_finetunes_on_user_classes(user_data, tmp_path, two_threads):
    from mmeomt.utils.tool_config import build_runner
    checkpoint = pretrained_checkpoint(user_data, tmp_path / 'pretrain')
    data_root = osp.join(str(user_data / 'my_data'), '')
    path = edit_template('eomt_vit-l_custom-panoptic-640.py', tmp_path,
                         data_root=data_root,
                         thing_classes=converter.THING_CLASSES,
                         stuff_classes=converter.STUFF_CLASSES,
                         max_iters=FINETUNE_ITERS, load_from=checkpoint)

    def config(work_dir):
        cfg = at_ci_scale(Config.fromfile(path), 'panoptic')
        cfg.work_dir = str(tmp_path / work_dir)
        return cfg

    as_edited = Config.fromfile(path)
    assert as_edited.model.eomt.num_classes == 4 and as_edited.model.num_things_classes == 2
    assert as_edited.model.skip_mismatched == ['eomt.class_head']
    assert as_edited.model.eomt.backbone.init_cfg is None  # load_from replaces DINOv2's
    assert as_edited.load_from == checkpoint

    cfg = config('before')
    runner = build_runner(cfg)
    assert tuple(runner.train_dataloader.dataset.metainfo['classes']) == (
        'cell', 'mitosis', 'stroma', 'background')
    before = runner.val()['coco_panoptic/PQ']

    build_runner(config('after')).train()
    cfg = config('eval')
    cfg.load_from = osp.join(str(tmp_path / 'after'), f'iter_{FINETUNE_ITERS}.pth')
    after = build_runner(cfg).val()
    assert after['coco_panoptic/PQ'] >= before + PQ_MARGIN, (before, after)
    # Both thing and stuff classes were learnt (the metric splits them).
    assert after['coco_panoptic/PQ_th'] > 0 and after['coco_panoptic/PQ_st'] > 0


@pytest.mark.parametrize('task,name', [('instance', 'eomt_vit-l_custom-instance-640.py'),
                                       ('semantic', 'eomt_vit-l_custom-semantic-512.py')])
def test_other_templates_read_user_data_and_train(task, name, user_data, tmp_path):
    from mmeomt.utils.tool_config import build_runner
    data_root = osp.join(str(user_data / 'my_data'), '')
    classes = list(converter.THING_CLASSES)
    if task == 'semantic':
        classes += converter.STUFF_CLASSES
    path = edit_template(name, tmp_path, data_root=data_root, classes=classes, max_iters=4,
                         load_from=None)
    cfg = at_ci_scale(Config.fromfile(path), task)
    # Four iterations: one of each warm-up (the demo's fractions of 4 would round to none).
    cfg.param_scheduler[0].update(warmup_iters=1, vit_warmup_iters=1, warmup_fraction=None,
                                  vit_warmup_fraction=None)
    cfg.model.eomt.backbone.init_cfg = None  # no DINOv2 download in CI
    cfg.work_dir = str(tmp_path / 'work')
    assert cfg.model.eomt.num_classes == len(classes)
    runner = build_runner(cfg)
    dataset = runner.train_dataloader.dataset
    assert tuple(dataset.metainfo['classes']) == tuple(classes)
    assert len(dataset) == NUM_TRAIN
    runner.train()
    metrics = runner.val()
    assert ('coco/segm_mAP' if task == 'instance' else 'mIoU') in metrics
