"""tools/train.py and tools/test.py: arguments, config merging, AMP, resume (no training run)."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs', 'eomt')
COCO_L = osp.join(CONFIGS, 'eomt_vit-l_8xb2-12e_coco-panoptic-640.py')
ADE_PAN = osp.join(CONFIGS, 'eomt_vit-l_8xb2-31e_ade20k-panoptic-640.py')
ADE_SEM = osp.join(CONFIGS, 'eomt_vit-l_8xb2-31e_ade20k-semantic-512.py')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'mmeomt_tool_{name}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = load_tool('train')
test_tool = load_tool('test')


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_help(tool):
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', f'{tool}.py'), '--help'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for option in ['--work-dir', '--cfg-options', '--launcher']:
        assert option in out.stdout
    assert '--tensorboard' in out.stdout
    if tool == 'train':
        assert '--resume' in out.stdout and '--amp' in out.stdout
        assert '--auto-scale-lr' in out.stdout
    else:
        assert '--out' in out.stdout and '--show-dir' in out.stdout
        assert '--skip-bad-images' in out.stdout


def test_train_merges_cfg_options_and_work_dir(tmp_path):
    args = train_tool.parse_args([
        COCO_L, '--work-dir', str(tmp_path), '--launcher', 'none', '--cfg-options',
        'train_cfg.max_iters=100', 'model.eomt.num_queries=7',
        'default_hooks.mask_annealing.start_fractions=[0.1,0.2,0.3,0.4]'])
    cfg = train_tool.build_config(args)
    assert cfg.work_dir == str(tmp_path)
    assert cfg.launcher == 'none'
    assert cfg.train_cfg.max_iters == 100
    assert cfg.model.eomt.num_queries == 7
    assert cfg.default_hooks.mask_annealing.start_fractions == [0.1, 0.2, 0.3, 0.4]
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.resume is False


def test_default_work_dir_is_named_after_the_config():
    cfg = train_tool.build_config(train_tool.parse_args([COCO_L]))
    assert cfg.work_dir == osp.join('./work_dirs', 'eomt_vit-l_8xb2-12e_coco-panoptic-640')


def test_amp_switches_the_optim_wrapper():
    from mmeomt.engine import has_accelerator
    cfg = train_tool.build_config(train_tool.parse_args([COCO_L, '--amp']))
    if has_accelerator():
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
    else:
        assert cfg.optim_wrapper.type == 'mmeomt.AmpOptimWrapper'
        assert cfg.optim_wrapper.dtype == 'bfloat16'
    # Everything else of the wrapper is kept.
    assert cfg.optim_wrapper.constructor == 'mmeomt.EoMTOptimWrapperConstructor'
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=0.01, norm_type=2)


def test_resume_with_a_path():
    cfg = train_tool.build_config(train_tool.parse_args([COCO_L, '--resume', 'a/iter_8.pth']))
    assert cfg.resume is True and cfg.load_from == 'a/iter_8.pth'


def test_resume_auto_without_checkpoints_keeps_the_initialisation(tmp_path):
    args = train_tool.parse_args([ADE_PAN, '--resume', '--work-dir', str(tmp_path)])
    assert args.resume == 'auto'
    cfg = train_tool.build_config(args)
    # A fresh ADE20K run still starts from its COCO weights.
    assert cfg.resume is False
    assert cfg.load_from.endswith('coco_panoptic_eomt_large_640/resolve/main/pytorch_model.bin')


def test_resume_auto_skips_a_truncated_checkpoint_and_says_so(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(train_tool, 'print_log', lambda msg, **kwargs: logged.append(msg))
    torch.save(dict(meta=dict(iter=4)), tmp_path / 'iter_4.pth')
    torch.save(dict(meta=dict(iter=8)), tmp_path / 'iter_8.pth')
    good = (tmp_path / 'iter_8.pth').read_bytes()
    (tmp_path / 'iter_12.pth').write_bytes(good[:len(good) // 2])  # killed while writing
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_12.pth'))
    cfg = train_tool.build_config(
        train_tool.parse_args([COCO_L, '--resume', 'auto', '--work-dir', str(tmp_path)]))
    assert cfg.resume is True and cfg.load_from == str(tmp_path / 'iter_8.pth')
    # Which checkpoint was passed over and why, then which one is used; once each.
    assert logged[0] == (f'--resume auto: skipping {tmp_path / "iter_12.pth"}: it is not a '
                         'complete zip archive (truncated, e.g. killed while writing, or not '
                         'written by torch.save)')
    assert logged[1] == f'--resume auto: resuming from {tmp_path / "iter_8.pth"}'
    assert len(logged) == 2

    # An empty pointer (killed while writing it) falls back the same way, and says so.
    logged.clear()
    (tmp_path / 'last_checkpoint').write_text('')
    assert train_tool.find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_8.pth')
    assert 'last_checkpoint is empty' in logged[0] and 'skipping' in logged[1]


def test_resume_takes_the_seed_of_the_checkpoint(tmp_path, monkeypatch):
    # mmengine builds the sampler and the workers' seeds before it reads the checkpoint.
    monkeypatch.setattr(train_tool, 'print_log', lambda *args, **kwargs: None)
    torch.save(dict(meta=dict(iter=4, seed=123)), tmp_path / 'iter_4.pth')
    cfg = train_tool.build_config(train_tool.parse_args(
        [COCO_L, '--resume', str(tmp_path / 'iter_4.pth'), '--cfg-options',
         'randomness.seed=None']))
    assert cfg.randomness.seed == 123
    cfg = train_tool.build_config(train_tool.parse_args([COCO_L]))
    assert cfg.randomness.seed == 0


def annotation_loaders(cfg):
    """(type, with_mask) of the test pipeline's annotation loaders."""
    return [(t['type'], t.get('with_mask')) for t in cfg.test_dataloader.dataset.pipeline
            if 'Annotations' in t['type']]


def test_test_tool_detection_config(tmp_path):
    out = str(tmp_path / 'preds.pkl')
    args = test_tool.parse_args([COCO_L, 'ckpt.pth', '--work-dir', str(tmp_path), '--out', out,
                                 '--show-dir', str(tmp_path / 'vis'), '--cfg-options',
                                 'test_dataloader.batch_size=1'])
    cfg = test_tool.build_config(args)
    assert cfg.load_from == 'ckpt.pth' and cfg.resume is False
    assert cfg.test_evaluator[-1] == dict(type='DumpDetResults', out_file_path=out)
    assert cfg.test_evaluator[0].type == 'mmeomt.CocoPanopticMetric'
    assert cfg.default_hooks.visualization.draw is True
    assert cfg.default_hooks.visualization.test_out_dir == str(tmp_path / 'vis')
    # Drawn ground truth needs its masks, which the test pipeline otherwise leaves out.
    assert annotation_loaders(cfg) == [('mmeomt.LoadPanopticAnnotations', True)]
    cfg = test_tool.build_config(test_tool.parse_args([COCO_L, 'ckpt.pth']))
    assert annotation_loaders(cfg) == [('mmeomt.LoadPanopticAnnotations', False)]
    with pytest.raises(ValueError, match='.pkl'):
        test_tool.build_config(test_tool.parse_args([COCO_L, 'ckpt.pth', '--out', 'x.json']))


def test_test_tool_skip_bad_images_wraps_the_test_dataset():
    plain = test_tool.build_config(test_tool.parse_args([ADE_SEM, 'ckpt.pth']))
    cfg = test_tool.build_config(test_tool.parse_args([ADE_SEM, 'ckpt.pth',
                                                       '--skip-bad-images']))
    assert cfg.test_dataloader.dataset.type == 'mmeomt.SkipUnreadableImages'
    assert cfg.test_dataloader.dataset.dataset == plain.test_dataloader.dataset
    assert cfg.custom_hooks[-1] == dict(type='mmeomt.SkippedImagesHook')
    # mmeomt's COCO datasets leave missing files to the wrapper, which skips them too.
    cfg = test_tool.build_config(test_tool.parse_args([COCO_L, 'ckpt.pth',
                                                       '--skip-bad-images']))
    assert cfg.test_dataloader.dataset.dataset.check_files is False


def test_test_tool_semantic_config(tmp_path):
    args = test_tool.parse_args([ADE_SEM, 'ckpt.pth', '--out', str(tmp_path / 'png'),
                                 '--show-dir', str(tmp_path / 'vis')])
    cfg = test_tool.build_config(args)
    assert cfg.test_evaluator.output_dir == str(tmp_path / 'png')
    assert cfg.test_evaluator.keep_results is True
    assert cfg.visualizer.save_dir == str(tmp_path / 'vis')
    # Every image drawn (mmseg's hook draws every 50th by default), unless the config says.
    assert cfg.default_hooks.visualization.interval == 1 and cfg.default_hooks.visualization.draw
    cfg = test_tool.build_config(test_tool.parse_args(
        [ADE_SEM, 'ckpt.pth', '--show-dir', 'vis', '--cfg-options',
         'default_hooks.visualization.interval=10']))
    assert cfg.default_hooks.visualization.interval == 10


def test_load_gt_masks_switches_mmdet_loaders_only():
    from mmengine.config import Config

    from mmeomt.utils.tool_config import load_gt_masks
    instance = Config.fromfile(osp.join(CONFIGS, 'eomt_vit-l_8xb2-12e_coco-instance-640.py'))
    # Through a dataset wrapper too (tools/test.py --skip-bad-images).
    instance.test_dataloader.dataset = dict(type='mmeomt.SkipUnreadableImages',
                                            dataset=instance.test_dataloader.dataset)
    assert load_gt_masks(instance, ['test_dataloader']) == 1
    loaders = [t for t in instance.test_dataloader.dataset.dataset.pipeline
               if t['type'] == 'LoadAnnotations']
    assert [t['with_mask'] for t in loaders] == [True]
    assert load_gt_masks(instance, ['test_dataloader']) == 0  # already on
    semantic = Config.fromfile(ADE_SEM)
    before = semantic.test_dataloader.dataset.pipeline
    assert load_gt_masks(semantic) == 0 and semantic.test_dataloader.dataset.pipeline == before
