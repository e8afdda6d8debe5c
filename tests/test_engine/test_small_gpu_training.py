"""Training with a small batch per GPU: gradient accumulation and ``--auto-scale-lr``.

What it promises (docs/training.md):
* ``optim_wrapper.accumulative_counts = k``: the update is the mean of the ``k`` micro-batches'
  gradients, each micro-batch's loss normalised by its own number of target masks (and its own
  class weights).  It equals the gradient of one batch ``k`` times as large exactly when the
  micro-batches hold equally many target masks; otherwise it is that mean, not the large batch's;
* the lr schedule (``TwoStageWarmupPolyLR``) and the mask annealing (``MaskAnnealingHook``)
  count runner iterations, i.e. micro-batches: iteration ``t`` gets the values of ``t``, and
  the optimiser steps after iterations ``k - 1, 2k - 1, ...`` with the lr of that iteration;
* ``tools/train.py --auto-scale-lr`` multiplies every param group's lr -- after the layer-decay
  constructor, so the ratios between groups stay -- by ``GPUs x batch x k / 16``, before the
  scheduler reads its initial lrs.
"""
import copy
import importlib.util
import math
import os.path as osp
import random
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope

from mmeomt.datasets.synthetic import generate_synthetic_dataset
from mmeomt.engine.hooks.mask_annealing_hook import annealed_prob
from mmeomt.engine.schedulers.two_stage_warmup import two_stage_warmup_poly

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_reliability'))
from helpers import write_config  # noqa: E402


def load_train_tool():
    spec = importlib.util.spec_from_file_location('mmeomt_tool_train_small_gpu',
                                                  osp.join(ROOT, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = load_train_tool()


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    """The reliability tests' tiny panoptic config (ViT of 4 blocks x 64 dims at 64 x 64) on 8
    freshly generated synthetic scenes, with in-process data loading."""
    tmp = tmp_path_factory.mktemp('small_gpu')
    root = str(tmp / 'data')
    generate_synthetic_dataset(root, num_train=8, num_val=2, seed=0)
    return write_config(str(tmp / 'tiny.py'), root, extra=(
        'train_dataloader.update(num_workers=0, persistent_workers=False)\n'
        'val_dataloader.update(num_workers=0, persistent_workers=False)\n'))


def fixed_rand(*shape, device=None, **kwargs):
    """``torch.rand`` whose numbers depend only on the last two dims: the same points for every
    image and every matched mask, whatever the batch.  With it the loss of a batch is the same
    function of each image's predictions however the images are grouped into batches."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    n, d = shape[-2], shape[-1]
    # A low-discrepancy sequence in [0, 1)^d (Kronecker, irrational steps).
    steps = torch.tensor([math.sqrt(2), math.sqrt(3), math.sqrt(5)][:d], dtype=torch.float64)
    points = (torch.arange(1, n + 1, dtype=torch.float64)[:, None] * steps).frac().float()
    return points.expand(*shape).clone().to(device)


def build_model_and_samples(config: str, num_samples: int = 8):
    """The tiny model (seeded) and augmented training samples, drawn once."""
    cfg = Config.fromfile(config)
    init_default_scope('mmdet')
    from mmdet.registry import DATASETS, MODELS
    import mmeomt  # noqa: F401
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    # mmcv's transforms draw from numpy and random.
    np.random.seed(0)
    random.seed(0)
    samples = [dataset[i] for i in range(num_samples)]
    return cfg, model, samples


def accumulated_gradients(cfg, model, batches, accumulative_counts):
    """The gradients the optimiser would step on after ``batches`` (one update), through
    mmengine's ``OptimWrapper`` with ``accumulative_counts`` (its step is intercepted)."""
    from mmengine.optim import build_optim_wrapper
    model = copy.deepcopy(model)
    # float32 (the config's bfloat16 autocast would round the two ways differently).
    options = {k: v for k, v in cfg.optim_wrapper.items() if k != 'dtype'}
    wrapper = build_optim_wrapper(
        model, dict(options, type='OptimWrapper', accumulative_counts=accumulative_counts))
    stepped = []

    def step(**kwargs):
        stepped.append({n: p.grad.clone() for n, p in model.named_parameters()
                        if p.grad is not None})

    with mock.patch.object(wrapper, 'step', step), \
            mock.patch('torch.rand', fixed_rand):
        for batch in batches:
            model.train_step(pseudo_collate(batch), wrapper)
    assert len(stepped) == 1, f'{len(batches)} micro-batches with accumulation ' \
        f'{accumulative_counts} must give one optimiser step, got {len(stepped)}'
    return stepped[0]


def num_targets(model, sample) -> int:
    """The target masks the loss normalises by: things and stuff, crowd regions left out."""
    return len(model.targets(sample['data_samples'], sample['inputs'].shape[-2:]))


def test_accumulation_equals_the_large_batch_when_targets_balance(tiny_config):
    cfg, model, samples = build_model_and_samples(tiny_config)
    counts = [num_targets(model, s) for s in samples]
    # Two micro-batches of 2 with the same number of target masks, from the drawn samples.
    pairs = [(i, j) for i in range(len(samples)) for j in range(i + 1, len(samples))]
    chosen = None
    for a in pairs:
        for b in pairs:
            if not set(a) & set(b) and counts[a[0]] + counts[a[1]] == counts[b[0]] + counts[b[1]]:
                chosen = (a, b)
                break
        if chosen:
            break
    assert chosen, f'no balanced micro-batches among target counts {counts}'
    (a0, a1), (b0, b1) = chosen
    small = [[samples[a0], samples[a1]], [samples[b0], samples[b1]]]
    large = [[samples[a0], samples[a1], samples[b0], samples[b1]]]

    accumulated = accumulated_gradients(cfg, model, small, accumulative_counts=2)
    one_batch = accumulated_gradients(cfg, model, large, accumulative_counts=1)
    assert accumulated.keys() == one_batch.keys() and len(one_batch) > 10
    for name, grad in one_batch.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_accumulation_is_the_mean_of_the_micro_batches_otherwise(tiny_config):
    cfg, model, samples = build_model_and_samples(tiny_config)
    counts = [num_targets(model, s) for s in samples]
    # Micro-batches with different numbers of target masks.
    order = sorted(range(len(samples)), key=counts.__getitem__)
    first, second = [samples[i] for i in order[:2]], [samples[i] for i in order[-2:]]
    assert sum(counts[i] for i in order[:2]) != sum(counts[i] for i in order[-2:])

    accumulated = accumulated_gradients(cfg, model, [first, second], accumulative_counts=2)
    each = [accumulated_gradients(cfg, model, [batch], accumulative_counts=1)
            for batch in (first, second)]
    one_batch = accumulated_gradients(cfg, model, [first + second], accumulative_counts=1)
    differs = 0
    for name, grad in accumulated.items():
        torch.testing.assert_close(grad, (each[0][name] + each[1][name]) / 2, rtol=1e-4,
                                   atol=1e-7, msg=name)
        differs += not torch.allclose(grad, one_batch[name], rtol=1e-3, atol=1e-6)
    # The large batch normalises by the targets of all four images: another gradient.
    assert differs > len(accumulated) // 2


class RecordSchedules(Hook):
    """Per iteration: the lr of every group and the annealing probabilities it runs with, and
    how many optimiser steps have been taken once it is done."""

    def __init__(self):
        self.lrs, self.probs, self.steps = {}, {}, {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        groups = runner.optim_wrapper.optimizer.param_groups
        self.lrs[runner.iter] = [(g['lr'], g['vit'], g['initial_lr'], g['lr_scale'])
                                 for g in groups]
        self.probs[runner.iter] = runner.model.eomt.attn_mask_probs.tolist()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        state = runner.optim_wrapper.optimizer.state
        first = runner.optim_wrapper.optimizer.param_groups[0]['params'][0]
        self.steps[runner.iter] = int(state[first]['step']) if first in state else 0


def test_schedules_count_iterations_and_auto_scale_lr_counts_accumulation(tiny_config,
                                                                          tmp_path):
    from mmeomt.utils.tool_config import build_runner
    max_iters, k, batch = 8, 2, 1
    args = train_tool.parse_args([
        tiny_config, '--auto-scale-lr', '--work-dir', str(tmp_path), '--cfg-options',
        f'train_dataloader.batch_size={batch}', f'optim_wrapper.accumulative_counts={k}',
        f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}',
        'default_hooks.mask_annealing.start_iters=[1,3]',
        'default_hooks.mask_annealing.end_iters=[5,7]',
        'default_hooks.checkpoint.interval=100'])
    cfg = train_tool.build_config(args)
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16 / k)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = build_runner(cfg)
    record = RecordSchedules()
    # After MaskAnnealingHook (NORMAL) before an iteration, before ParamSchedulerHook (LOW)
    # after it.
    runner.register_hook(record, 'BELOW_NORMAL')
    runner.train()

    base_lr = cfg.optim_wrapper.optimizer.lr
    ratio = batch * k / 16  # one process
    scheduler = cfg.param_scheduler[0]
    assert sorted(record.lrs) == list(range(max_iters))
    for t, groups in record.lrs.items():
        for lr, vit, initial, lr_scale in groups:
            # Scaled after the constructor (layer decay kept), before the scheduler was built.
            assert initial == pytest.approx(base_lr * lr_scale * ratio, rel=1e-9)
            assert lr == pytest.approx(two_stage_warmup_poly(
                t, initial, vit, max_iters, scheduler.warmup_iters,
                scheduler.vit_warmup_iters, scheduler.power), rel=1e-9, abs=1e-15)
        assert record.probs[t] == pytest.approx(
            [annealed_prob(t, s, e) for s, e in zip([1, 3], [5, 7])])
    # One optimiser step per k iterations, after iterations k - 1, 2k - 1, ...
    assert record.steps == {t: (t + 1) // k for t in range(max_iters)}


def test_auto_scale_lr_without_accumulation_and_bad_values(tiny_config):
    cfg = train_tool.build_config(train_tool.parse_args([tiny_config, '--auto-scale-lr']))
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    cfg = train_tool.build_config(train_tool.parse_args([tiny_config]))
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    with pytest.raises(ValueError, match='auto_scale_lr.base_batch_size'):
        train_tool.build_config(train_tool.parse_args(
            [tiny_config, '--auto-scale-lr', '--cfg-options', 'auto_scale_lr=None']))
    with pytest.raises(ValueError, match='accumulative_counts'):
        train_tool.build_config(train_tool.parse_args(
            [tiny_config, '--auto-scale-lr', '--cfg-options',
             'optim_wrapper.accumulative_counts=0']))
