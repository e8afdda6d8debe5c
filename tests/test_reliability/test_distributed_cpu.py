"""Data-parallel training and evaluation on the CPU: ``tools/dist_train.sh CONFIG 2`` and
``tools/dist_test.sh`` run with gloo on a machine without a GPU.

Two processes at batch 1 see the same two images as one process at batch 2 (mmengine's
infinite sampler deals the shuffled indices out to the ranks in turn), so their first
iteration must give the same losses -- up to float rounding, once the loss's random points are
fixed (``GridPointsEoMTLoss``), the augmentations that change the targets are off and the
run is in float32:

* the mask and dice losses are divided by the number of target masks averaged over the ranks
  (as the authors do), so the mean of the two ranks' losses is the one-process loss (with a
  per-rank count it would not be: the two images have different numbers of targets);
* the class loss is a weighted mean over each rank's queries (as the authors'), so the two
  ranks' losses weighted by their class-weight sums give the one-process loss.
"""
import glob
import json
import os.path as osp
import pickle
import sys

import pytest
import torch

from helpers import (noise_everywhere_checkpoint, read_losses, run_tool, tool_env,
                     write_config)

MAX_ITERS = 6
NUM_QUERIES = 10  # tiny_panoptic.py
NO_OBJECT_WEIGHT = 0.1
LOSS_SETS = ('', 'd0.', 'd1.')  # the final prediction and the two masked blocks


def train_config(tmp_path, name, data_root, work_dir, batch_size):
    extra = f'''
train_dataloader.update(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=[
        dict(t, prob=0.0) if t['type'] == 'RandomFlip' else
        dict(t, ratio_range=(1.0, 1.0)) if t['type'] == 'RandomResize' else t
        for t in _base_.train_pipeline]))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    **{{k: v for k, v in _base_.optim_wrapper.items() if k not in ('type', 'dtype')}})
model = dict(loss=dict(type='GridPointsEoMTLoss'))
train_cfg = dict(max_iters={MAX_ITERS}, val_interval={MAX_ITERS + 1})
default_hooks = dict(checkpoint=dict(interval={MAX_ITERS}))
'''
    return write_config(str(tmp_path / f'{name}.py'), data_root,
                        record_dir=osp.join(work_dir, 'record'), extra=extra)


def cpu_env(port: int) -> dict:
    env = tool_env(threads=1)
    env.update(PYTHON=sys.executable, PORT=str(port), CUDA_VISIBLE_DEVICES='')
    return env


def class_weight_sum(num_gts: int) -> float:
    matched = min(num_gts, NUM_QUERIES)
    return matched + NO_OBJECT_WEIGHT * (NUM_QUERIES - matched)


def test_two_cpu_processes_train_as_one_at_twice_the_batch(tmp_path, synthetic_root):
    ddp_dir = str(tmp_path / 'ddp')
    done = run_tool(['dist_train.sh', train_config(tmp_path, 'ddp', synthetic_root, ddp_dir, 1),
                     '2', '--work-dir', ddp_dir], env=cpu_env(29731))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gloo instead of the config's 'nccl'" in done.stdout + done.stderr

    # One checkpoint (rank 0 writes), nothing half-written, and both ranks hold the same
    # weights at the end.
    assert sorted(p for p in glob.glob(osp.join(ddp_dir, '*')) if '.pth' in p) == [
        osp.join(ddp_dir, f'iter_{MAX_ITERS}.pth')]
    weights = [torch.load(osp.join(ddp_dir, 'record', f'weights_rank{r}.pth')) for r in (0, 1)]
    checkpoint = torch.load(osp.join(ddp_dir, f'iter_{MAX_ITERS}.pth'), weights_only=False)
    saved = checkpoint['state_dict']
    # Each rank's random generators, for an exact resume of both.
    random_state = checkpoint['meta']['random_state']
    assert random_state['world_size'] == 2 and len(random_state['states']) == 2
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
        assert torch.equal(weights[0][key], saved[key]), key

    single_dir = str(tmp_path / 'single')
    done = run_tool(['train.py', train_config(tmp_path, 'single', synthetic_root, single_dir, 2),
                     '--work-dir', single_dir], env=cpu_env(0))
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [read_losses(osp.join(ddp_dir, 'record'), rank)[1] for rank in (0, 1)]
    single = read_losses(osp.join(single_dir, 'record'))[1]
    counts = [int(r['num_targets']) for r in ranks]
    assert sum(counts) == single['num_targets']
    assert counts[0] != counts[1]  # else a per-rank mask normaliser would pass as well
    weights = [class_weight_sum(n) for n in counts]
    for prefix in LOSS_SETS:
        for name in ('loss_mask', 'loss_dice'):
            mean = (ranks[0][prefix + name] + ranks[1][prefix + name]) / 2
            assert mean == pytest.approx(single[prefix + name], rel=1e-5), prefix + name
        weighted = sum(w * r[prefix + 'loss_cls'] for w, r in zip(weights, ranks)) / sum(weights)
        assert weighted == pytest.approx(single[prefix + 'loss_cls'], rel=1e-5), prefix


def test_two_cpu_processes_evaluate_as_one(tmp_path, synthetic_root):
    # Five images over two processes: mmengine's sampler pads rank 1 with a repeat, which the
    # result collection must drop again.
    config = write_config(str(tmp_path / 'eval.py'), synthetic_root, extra='''
test_dataloader = dict(batch_size=1, dataset=dict(
    data_root=data_root, indices=5, ann_file='annotations/panoptic_train2017.json',
    data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/')))
test_evaluator = dict(ann_file=data_root + 'annotations/panoptic_train2017.json',
                      seg_prefix=data_root + 'annotations/panoptic_train2017/')
''')
    checkpoint = noise_everywhere_checkpoint(config, str(tmp_path / 'noise.pth'))

    results = {}
    for name, command in [
            ('one', ['test.py', config, checkpoint]),
            ('two', ['dist_test.sh', config, checkpoint, '2'])]:
        out_dir = str(tmp_path / name)
        done = run_tool(command + ['--work-dir', out_dir, '--out', f'{out_dir}/preds.pkl'],
                        env=cpu_env(29741))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (log,) = glob.glob(osp.join(out_dir, '*', '*.json'))
        with open(log, encoding='utf-8') as f:
            metrics = json.loads(f.readlines()[-1])
        with open(f'{out_dir}/preds.pkl', 'rb') as f:
            preds = pickle.load(f)
        results[name] = metrics, preds

    (metrics_1, preds_1), (metrics_2, preds_2) = results['one'], results['two']
    assert [p['img_id'] for p in preds_1] == [p['img_id'] for p in preds_2]
    assert len(preds_2) == 5
    for a, b in zip(preds_1, preds_2):
        assert torch.equal(a['pred_panoptic_seg']['sem_seg'], b['pred_panoptic_seg']['sem_seg'])
    keys = [k for k in metrics_1 if k.startswith('coco_panoptic/')]
    assert keys and {k: metrics_1[k] for k in keys} == {k: metrics_2[k] for k in keys}
    assert metrics_1['coco_panoptic/PQ_st'] > 0  # the comparison is not one of zeros
