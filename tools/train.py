"""Train an EoMT model from a config file (the interface of mmdet's and mmseg's ``train.py``).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|CKPT]] [--amp]
                          [--auto-scale-lr] [--tensorboard] [--cfg-options KEY=VALUE ...]
                          [--launcher none|pytorch|slurm|mpi]

``--auto-scale-lr``: scale the lr linearly with the total batch, relative to the config's
``auto_scale_lr.base_batch_size`` (16 for the published configs); the total batch counts GPUs,
``train_dataloader.batch_size`` and ``optim_wrapper.accumulative_counts``.

``--tensorboard``: log losses, lr, annealing probabilities and metrics to TensorBoard too
(mmengine's ``TensorboardVisBackend``, event files under ``<work_dir>/<timestamp>/vis_data``).

Distributed: ``tools/dist_train.sh CONFIG NUM_GPUS [ARGS]``.
"""
import argparse
import glob
import logging
import os
import os.path as osp
import re
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from mmeomt.models.checkpoint import checkpoint_problem
from mmeomt.utils.tool_config import add_tensorboard, build_runner, load_tool_config


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train an EoMT model')
    parser.add_argument('config', help='train config file')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints (default: '
                        'work_dirs/<config name>, unless the config sets work_dir)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto', metavar='CKPT',
        help='resume training (iteration, optimizer, schedulers) from CKPT; with no value or '
        '"auto", from the latest intact checkpoint in the work dir (starting afresh if none)')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision: float16 with loss scaling on a GPU (as the authors), '
        'bfloat16 on the CPU')
    parser.add_argument(
        '--tensorboard', action='store_true',
        help='also log to TensorBoard (mmengine TensorboardVisBackend; event files under '
        '<work_dir>/<timestamp>/vis_data)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr by (GPUs x batch per GPU x accumulative_counts) / '
        'auto_scale_lr.base_batch_size of the config')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. train_cfg.max_iters=1000 (the annealing windows, '
        'fractions of it, follow) model.eomt.num_queries=100 '
        '"default_hooks.mask_annealing.start_fractions=[0.1,0.2,0.3,0.4]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local_rank (older) or --local-rank (newer).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume auto`` continues from.

    mmengine's own choice is the path in ``work_dir/last_checkpoint``; if that file is missing,
    empty or names a missing or truncated checkpoint, the newest intact ``iter_*.pth`` /
    ``epoch_*.pth`` in ``work_dir`` is used instead.  Every checkpoint passed over is logged
    with the reason.
    """
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer, encoding='utf-8') as f:
            path = f.read().strip()
        if path:
            candidates.append(path)
        else:
            print_log(f'--resume auto: {pointer} is empty (killed while writing it?); looking '
                      f'for the newest intact checkpoint in {work_dir}', logger='current',
                      level=logging.WARNING)

    def number(path: str) -> int:
        return int(re.search(r'_(\d+)\.pth$', path).group(1))

    numbered = [p for p in glob.glob(osp.join(work_dir, '*.pth'))
                if re.search(r'(?:^|/)(?:iter|epoch)_\d+\.pth$', p)]
    seen = set()
    for path in candidates + sorted(numbered, key=number, reverse=True):
        if osp.abspath(path) in seen:
            continue
        seen.add(osp.abspath(path))
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        print_log(f'--resume auto: skipping {path}: {problem}', logger='current',
                  level=logging.WARNING)
    return None


def checkpoint_seed(path: str) -> Optional[int]:
    """The seed a training checkpoint was written with (``meta.seed``), or None.

    The tensors are memory-mapped, not read, so this is cheap for any checkpoint size.
    """
    import torch
    try:
        checkpoint = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    except Exception:  # not a local torch file (a URL, ...): the Runner reports it when loading
        return None
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    seed = meta.get('seed') if isinstance(meta, dict) else None
    return seed if isinstance(seed, int) else None


def use_checkpoint_seed(cfg: Config, checkpoint: str) -> None:
    """Seed the resumed run with its checkpoint's seed.

    mmengine builds the sampler and the data-loader workers' seeds from the config's seed before
    it reads the checkpoint (and only warns about a different one), so a run with ``seed=None``
    or a changed seed would resume with another data order and other augmentations.
    """
    seed = checkpoint_seed(checkpoint)
    if seed is None:
        return
    randomness = dict(cfg.get('randomness') or {})
    if randomness.get('seed') not in (None, seed):
        print_log(f'--resume: the config seeds with {randomness["seed"]}, {checkpoint} was '
                  f'trained with seed {seed}; resuming with {seed}', logger='current',
                  level=logging.WARNING)
    randomness['seed'] = seed
    cfg.randomness = randomness


def enable_amp(cfg: Config) -> None:
    """Switch ``cfg.optim_wrapper`` to mixed precision.

    mmengine's ``AmpOptimWrapper`` needs an accelerator; without one, mmeomt's subclass runs
    bfloat16 autocast on the CPU.
    """
    from mmeomt.engine import has_accelerator

    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type in ('AmpOptimWrapper', 'mmeomt.AmpOptimWrapper'):
        print_log(f'--amp: optim_wrapper is already {wrapper_type}', logger='current')
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp switches an OptimWrapper to mixed precision; this config '
                         f'has optim_wrapper.type={wrapper_type!r}')
    if has_accelerator():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        cfg.optim_wrapper.type = 'mmeomt.AmpOptimWrapper'
        cfg.optim_wrapper.dtype = 'bfloat16'


def enable_auto_scale_lr(cfg: Config) -> None:
    """Switch on mmengine's linear lr scaling, counting accumulated micro-batches.

    mmengine's ``Runner.scale_lr`` multiplies the lr of every param group (after the optimiser
    constructor has set the layer-decayed lrs, so their ratios are kept) by ``world_size *
    train_dataloader.batch_size / base_batch_size``.  It does not count
    ``optim_wrapper.accumulative_counts``: with ``k`` accumulated micro-batches an optimiser
    step averages the gradients of ``k`` times that batch, so the base batch is divided by
    ``k`` here to give the ratio of the batch per optimiser step.
    """
    scale = cfg.get('auto_scale_lr')
    if not scale or scale.get('base_batch_size') is None:
        raise ValueError(f'--auto-scale-lr needs auto_scale_lr.base_batch_size in the config '
                         f'(the total batch its lr is meant for; 16 for the published '
                         f'configs), {cfg.filename} has auto_scale_lr={scale!r}')
    scale['enable'] = True
    counts = cfg.optim_wrapper.get('accumulative_counts', 1)
    if not isinstance(counts, int) or counts < 1:
        raise ValueError(f'optim_wrapper.accumulative_counts must be an int >= 1, got '
                         f'{counts!r}')
    if counts > 1:
        base = scale['base_batch_size']
        scale['base_batch_size'] = base / counts
        print_log(f'--auto-scale-lr: {counts} accumulated micro-batches per optimiser step; '
                  f'the base batch {base} is compared with the batch of one micro-batch as '
                  f'{base} / {counts} = {base / counts:g}', logger='current')


def build_config(args: argparse.Namespace) -> Config:
    """The config the Runner gets: file + ``--cfg-options`` + work dir, AMP, lr scaling and
    resume flags."""
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    if args.tensorboard:
        add_tensorboard(cfg)

    if args.resume == 'auto':
        checkpoint = find_resumable_checkpoint(cfg.work_dir)
        if checkpoint is None:
            # Keep the config's load_from (e.g. the COCO weights of ADE20K panoptic): a fresh
            # start must be the same as without --resume.
            print_log(f'--resume auto: no intact checkpoint in {cfg.work_dir}, starting '
                      'from scratch', logger='current')
            cfg.resume = False
        else:
            print_log(f'--resume auto: resuming from {checkpoint}', logger='current')
            cfg.resume = True
            cfg.load_from = checkpoint
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if cfg.get('resume') and cfg.get('load_from'):
        use_checkpoint_seed(cfg, cfg.load_from)
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    build_runner(build_config(args)).train()


if __name__ == '__main__':
    main()
