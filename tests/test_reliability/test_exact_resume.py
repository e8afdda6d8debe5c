"""Exact resume: a training process killed with SIGKILL and resumed with ``--resume`` gives the
losses of every later iteration and the final weights of the uninterrupted run, bit for bit.

The run is short but draws from every generator training uses: masked attention is annealed
(probabilities strictly between 0 and 1, so each query's mask is a random draw), the loss
samples random points, the pipeline flips, jitters and crops at random -- in a data-loader
worker or, with ``num_workers=0``, in the main process -- and a validation in the middle of the
run (at the checkpoint the resumed run starts from) is not repeated by the resumed run.
"""
import os.path as osp

import pytest
import torch

from helpers import read_losses, run_tool, write_config

MAX_ITERS, KILL_AFTER = 8, 6  # checkpoints at 4 and 8: the resumed run starts at 4
SCHEDULE = f'''
train_cfg = dict(max_iters={MAX_ITERS}, val_interval=4)
default_hooks = dict(mask_annealing=dict(start_iters=[1, 2], end_iters=[7, 8]))
'''


def train(tmp_path, name, data_root, work_dir, kill_after=None, resume=False, extra=''):
    config = write_config(str(tmp_path / f'{name}.py'), data_root,
                          record_dir=osp.join(work_dir, 'losses'), kill_after=kill_after,
                          extra=SCHEDULE + extra)
    args = ['train.py', config, '--work-dir', work_dir] + (['--resume'] if resume else [])
    return run_tool(args, threads=2)


def final_weights(work_dir):
    checkpoint = torch.load(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'), map_location='cpu',
                            weights_only=False)
    return checkpoint['state_dict']


@pytest.mark.parametrize('num_workers', [1, 0])
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, synthetic_root,
                                                          num_workers):
    loader = (f'train_dataloader.update(num_workers={num_workers}, '
              f'persistent_workers={num_workers > 0})\n')
    reference = str(tmp_path / 'reference')
    done = train(tmp_path, 'reference', synthetic_root, reference, extra=loader)
    assert done.returncode == 0, done.stderr[-3000:]

    work_dir = str(tmp_path / 'interrupted')
    killed = train(tmp_path, 'killed', synthetic_root, work_dir, kill_after=KILL_AFTER,
                   extra=loader)
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL, after iteration 6
    assert not osp.exists(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'))
    resumed = train(tmp_path, 'resumed', synthetic_root, work_dir, resume=True, extra=loader)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resuming from' in log and 'iter_4.pth' in log
    assert 'Restored the random generators of iteration 4' in log

    expected, got = read_losses(osp.join(reference, 'losses')), read_losses(
        osp.join(work_dir, 'losses'))
    assert sorted(got) == list(range(1, MAX_ITERS + 1))
    for it in range(1, MAX_ITERS + 1):  # 5 and 6 from the resumed run, not the killed one
        assert got[it] == expected[it], f'iteration {it}'

    a, b = final_weights(reference), final_weights(work_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_checkpoints_hold_every_generator_and_the_loss_scaler(tmp_path, synthetic_root):
    # The state the resume test relies on, visible in the file (one short run).
    work_dir = str(tmp_path / 'run')
    config = write_config(str(tmp_path / 'run.py'), synthetic_root,
                          extra='train_cfg = dict(max_iters=6, val_interval=6)\n')
    done = run_tool(['train.py', config, '--work-dir', work_dir], threads=2)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = torch.load(osp.join(work_dir, 'iter_4.pth'), weights_only=False)
    saved = checkpoint['meta']['random_state']
    assert saved['world_size'] == 1 and len(saved['states']) == 1
    assert {'python', 'numpy', 'torch', 'cuda'} <= saved['states'][0].keys()
    assert checkpoint['meta']['seed'] == 0
    # mmengine's AMP wrapper keeps the loss scaler in the optimiser state.
    assert 'loss_scaler' in checkpoint['optimizer']
