"""The OpenMMLab tools on the synthetic data: the files they write.

* ``tools/test.py --show-dir``: one ``ground truth | prediction`` picture per test image, through
  the task's visualisation hook (mmdet's names and folder for panoptic/instance, mmseg's
  ``vis_data/vis_image`` PNGs for semantic);
* ``tools/analysis_tools/get_flops.py``: parameters and FLOPs of the network, the scaled
  dot-product attention counted by our formula;
* ``tools/analysis_tools/browse_dataset.py``: one PNG per sample of the pipeline's output with
  its targets drawn;
* ``--tensorboard``: a short training run writes TensorBoard event files with the losses.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmeomt.datasets.synthetic import generate_synthetic_dataset

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SYNTHETIC = osp.join(ROOT, 'configs', 'eomt', 'synthetic')
TINY_PANOPTIC = osp.join(ROOT, 'tests', 'test_reliability', 'configs', 'tiny_panoptic.py')
TASKS = ('panoptic', 'instance', 'semantic')
NUM_VAL = 2


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'mmeomt_analysis_tool_{name}', osp.join(ROOT, 'tools', 'analysis_tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(args, timeout=300):
    """``python tools/<args>`` with this tree on the import path; fails with its output."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', args[0])] + args[1:],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('tools') / 'data')
    generate_synthetic_dataset(root, num_train=4, num_val=NUM_VAL, seed=0)
    return root


def task_config(tmp_path, task, data_root, base=None):
    """The synthetic demo config of ``task`` (``base``: another config) reading ``data_root``,
    with in-process data loading."""
    base = base or osp.join(SYNTHETIC, f'eomt_vit-t_synthetic-{task}.py')
    root = osp.join(data_root, 'ade' if task == 'semantic' else 'coco', '')
    lines = [f'_base_ = [{base!r}]', f'data_root = {root!r}']
    for split in ('train', 'val'):
        lines.append(f'{split}_dataloader = dict(num_workers=0, persistent_workers=False, '
                     'dataset=dict(data_root=data_root))')
    lines.append('test_dataloader = val_dataloader')
    if task != 'semantic':
        kind = 'panoptic' if task == 'panoptic' else 'instances'
        lines.append(f"val_evaluator = dict(ann_file=data_root + "
                     f"'annotations/{kind}_val2017.json')")
        if task == 'panoptic':
            lines.append("val_evaluator.update(seg_prefix=data_root + "
                         "'annotations/panoptic_val2017/')")
        lines.append('test_evaluator = val_evaluator')
    path = tmp_path / f'{task}.py'
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def untrained_checkpoint(config, path):
    """A checkpoint of the config's model with seeded random weights."""
    from mmengine.registry import MODELS, init_default_scope

    import mmeomt  # noqa: F401
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return str(path)


def val_images(data_root, task):
    folder = 'ade/images/validation' if task == 'semantic' else 'coco/val2017'
    return sorted(glob.glob(osp.join(data_root, folder, '*.jpg')))


# ------------------------------------------------------------------------------ test --show-dir
@pytest.mark.parametrize('task', ['panoptic', 'semantic'])
def test_show_dir_writes_ground_truth_and_prediction(task, data_root, tmp_path):
    config = task_config(tmp_path, task, data_root)
    checkpoint = untrained_checkpoint(config, tmp_path / 'model.pth')
    show_dir = tmp_path / 'shown'
    run_tool(['test.py', config, checkpoint, '--work-dir', str(tmp_path / 'work'),
              '--show-dir', str(show_dir), '--cfg-options', 'test_dataloader.batch_size=1'])
    images = val_images(data_root, task)
    assert len(images) == NUM_VAL
    for image_path in images:
        name = osp.basename(image_path)
        if task == 'semantic':  # mmseg: through LocalVisBackend, test_<name>_<step>.png
            [drawn] = glob.glob(str(show_dir / 'vis_data' / 'vis_image' / f'test_{name}_*.png'))
        else:  # mmdet: <show-dir>/<image name>
            drawn = str(show_dir / name)
        drawn = mmcv.imread(drawn)
        image = mmcv.imread(image_path)
        # Ground truth | prediction, each the size of the input image.
        assert drawn.shape == (image.shape[0], 2 * image.shape[1], 3), name
        left, right = drawn[:, :image.shape[1]].astype(int), drawn[:, image.shape[1]:]
        assert np.abs(left - image).mean() > 5  # targets drawn over the image
        assert np.abs(left - right.astype(int)).mean() > 5  # not the same picture twice


# ----------------------------------------------------------------------------------- get_flops
def test_get_flops_counts_the_network_and_its_attention(tmp_path):
    from mmengine.registry import MODELS, init_default_scope
    config = osp.join(SYNTHETIC, 'eomt_vit-t_synthetic-panoptic.py')
    out = tmp_path / 'flops.json'
    printed = run_tool(['analysis_tools/get_flops.py', config, '--shape', '96', '128',
                        '--out', str(out)]).stdout
    result = json.loads(out.read_text())
    assert 'FLOPs:' in printed and 'Params:' in printed

    cfg = Config.fromfile(config)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    eomt = model.eomt
    assert result['params'] == sum(p.numel() for p in eomt.parameters())
    assert result['input_shape'] == [1, 3, 96, 128]
    # Our SDPA formula: per block, heads x N^2 x (d + d) multiply-adds, N tokens = prefix +
    # patches (+ queries in the last num_blocks blocks).
    vit = eomt.backbone
    heads, dims = vit.num_heads, vit.embed_dims // vit.num_heads
    tokens = vit.num_prefix_tokens + (96 // 16) * (128 // 16)
    depth, last = vit.num_layers, eomt.num_blocks
    expected = sum(heads * n * n * 2 * dims for n in
                   [tokens] * (depth - last) + [tokens + eomt.num_queries] * last)
    assert result['flops_by_operator']['scaled_dot_product_attention'] == expected
    # The linear layers dominate; their count follows from the shapes too: qkv, proj and the
    # two MLP layers per token and block.
    ffn = vit.arch_settings['feedforward_channels']
    per_token = 3 * vit.embed_dims ** 2 + vit.embed_dims ** 2 + 2 * vit.embed_dims * ffn
    blocks = per_token * (tokens * (depth - last) + (tokens + eomt.num_queries) * last)
    assert result['flops_by_operator']['linear'] >= blocks
    assert result['flops'] == pytest.approx(sum(result['flops_by_operator'].values()))
    assert 'aten::gelu' in result['uncounted_ops']

    # Masked attention (early in training) runs the mask module before the last blocks too.
    get_flops = load_tool('get_flops')
    masked = get_flops.main([config, '--shape', '96', '128', '--masked-attention'])
    assert masked['flops'] > result['flops'] and masked['params'] == result['params']
    with pytest.raises(ValueError, match='--shape'):
        get_flops.main([config, '--shape', '8'])


# ------------------------------------------------------------------------------ browse_dataset
@pytest.mark.parametrize('task', TASKS)
def test_browse_dataset_draws_the_pipeline_output(task, data_root, tmp_path):
    from mmengine.registry import DATASETS, init_default_scope
    browse = load_tool('browse_dataset')
    config = task_config(tmp_path, task, data_root)
    crop = Config.fromfile(config).crop_size

    # Training pipeline: augmented crops.
    written = browse.main([config, '--output-dir', str(tmp_path / 'train'), '--max-images',
                           '3'])
    assert len(written) == 3
    assert sorted(glob.glob(str(tmp_path / 'train' / '*.png'))) == sorted(written)
    for path in written:
        assert mmcv.imread(path).shape == (*crop, 3)

    # The (deterministic) test pipeline: the drawn image is the pipeline's image with targets.
    written = browse.main([config, '--output-dir', str(tmp_path / 'val'), '--phase', 'val',
                           '--max-images', '0'])
    assert len(written) == NUM_VAL
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    for index, path in enumerate(written):
        plain = dataset[index]['inputs'].permute(1, 2, 0).numpy().astype(int)  # BGR
        drawn = mmcv.imread(path).astype(int)
        assert drawn.shape == plain.shape
        changed = (np.abs(drawn - plain).sum(-1) > 30).mean()
        assert changed > 0.05, f'{path}: only {changed:.0%} of the pixels carry a target'


# --------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_switch_writes_event_files(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    config = task_config(tmp_path, 'panoptic', data_root, base=TINY_PANOPTIC)
    work_dir = tmp_path / 'work'
    iters = 6
    run_tool(['train.py', config, '--tensorboard', '--work-dir', str(work_dir), '--cfg-options',
              f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
              'default_hooks.checkpoint.interval=100'])
    [events] = glob.glob(str(work_dir / '*' / 'vis_data' / 'events.out.tfevents.*'))
    # The local backend stays: scalars.json beside the event file.
    assert osp.isfile(osp.join(osp.dirname(events), 'scalars.json'))
    accumulator = EventAccumulator(events)
    accumulator.Reload()
    scalars = accumulator.Tags()['scalars']
    for tag in ('loss', 'loss_mask', 'd0.loss_dice', 'lr', 'attn_mask_prob_0',
                'coco_panoptic/PQ'):
        assert tag in scalars, tag
    losses = accumulator.Scalars('loss')
    assert [e.step for e in losses] == list(range(1, iters + 1))
    assert all(np.isfinite(e.value) and e.value > 0 for e in losses)


def test_tensorboard_switch_in_the_config():
    from mmeomt.utils.tool_config import add_tensorboard
    cfg = Config.fromfile(osp.join(SYNTHETIC, 'eomt_vit-t_synthetic-semantic.py'))
    add_tensorboard(cfg)
    add_tensorboard(cfg)  # once only
    assert cfg.visualizer.vis_backends == [dict(type='LocalVisBackend'),
                                           dict(type='TensorboardVisBackend')]
