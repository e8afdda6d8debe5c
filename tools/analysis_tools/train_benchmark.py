"""Training-step speed of EoMT (panoptic), with a breakdown per phase.

Run as ``benchmark.py train`` or directly.  Builds an ``EoMTDetector`` of the given size with
random weights and one fixed batch of synthetic data (random normalised images; per image
``--num-targets`` random box-shaped things and three bands of stuff, as ``DetDataSample`` with
``gt_instances`` and ``gt_sem_seg``), then times full training steps after warm-up, as
mmengine's ``train_step`` runs them inside the optim wrapper's ``optim_context`` (autocast
with ``--amp``):

* **forward**: the network (``EoMT``), and inside it the **mask module** run before each masked
  block (``EoMT.predict`` + ``attn_mask``), the **ViT blocks**, the **final predict** and the
  rest (patch embedding, norms);
* **targets**: the detector turning the data samples into target masks;
* **loss**: ``EoMTLoss`` and mmengine's ``parse_losses``;
* **backward**;
* **optimiser**: ``step`` (gradient clipping included) + ``zero_grad`` of the optim wrapper that
  ``EoMTOptimWrapperConstructor`` builds from the published AdamW settings
  (``configs/eomt/_base_/schedules/eomt_adamw.py``).

``--compare-old-loss`` also times the per-image loss it replaced (``PerImageEoMTLoss``) and
``--compare-old-optim`` torch's default AdamW (a per-tensor loop on the CPU) instead of the fused
one.  Every variant trains its own copy of the same model; their steps are interleaved and each
step of an iteration starts from the same random seed, so the ratios hold on a noisy machine
(and the old and new loss give the same values).  Timers wait for the device (CUDA) at each
reading (per block inside the forward, a small cost there); the inner timers are off with
``--compile``.  Peak memory is the process's ``ru_maxrss`` (all variants together), plus the
peak CUDA allocation per variant on a GPU.

``--config CONFIG`` times instead the whole ``model.train_step`` of a training config on its own
data (the data preprocessor, forward, loss, backward and optimiser step, as the runner calls it;
batches drawn once from its train dataloader without workers, so loading is not timed), with the
config's model and optim wrapper.  ``--code DIR [DIR ...]`` runs that measurement once per
checkout of mmeomt, each in its own process that imports ``DIR/mmeomt`` and reads
``DIR/CONFIG`` (data paths stay relative to the working directory, so every checkout trains on
the same files), in alternating rounds (``--rounds``): today's code against an older commit, in
one run.

Examples::

    python tools/analysis_tools/train_benchmark.py --compare-old-loss --compare-old-optim
    python tools/analysis_tools/train_benchmark.py \
        --config configs/eomt/synthetic/eomt_vit-t_synthetic-panoptic.py --code . ../old
    python tools/analysis_tools/train_benchmark.py --arch small --img-size 640 --batch-size 2 \\
        --num-queries 200 --num-points 12544 --num-classes 133 --num-stuff 53 --amp
"""
import argparse
import copy
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Dict, List
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[2]
OPTIM_CONFIG = REPO / 'configs' / 'eomt' / '_base_' / 'schedules' / 'eomt_adamw.py'
# L2, the masked blocks: the published sizes' values, and the demo's for ViT-T.
NUM_BLOCKS = {'tiny': 2, 'small': 3, 'base': 3, 'large': 4}
FORWARD_PARTS = ('forward.mask_module', 'forward.blocks', 'forward.final_predict')
# The printed rows, in order; 'forward.other' is the forward minus its timed parts.
ROWS = ('total', 'forward', *FORWARD_PARTS, 'forward.other', 'targets', 'loss', 'backward',
        'optimiser')


class Timer:
    """Seconds per key, accumulated over ``with timer(key):`` blocks."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'
        self.seconds: Dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, key: str):
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[key] += time.perf_counter() - start


@contextmanager
def timed_forward_parts(eomt, timer: Timer):
    """Time the mask module before the masked blocks, the ViT blocks and the final predict.

    ``EoMT.forward`` in training calls ``predict`` and ``attn_mask`` before each of its
    ``num_blocks`` masked blocks, then ``predict`` once more on the output; the blocks run
    through the backbone's ``forward_block``.  Wrapping the three (on this instance and its
    backbone) leaves the forward as it is.
    """
    calls = [0]
    original_predict = eomt.predict

    def timed(key: str, function: Callable) -> Callable:

        def run(*args, **kwargs):
            with timer(key):
                return function(*args, **kwargs)

        return run

    def predict(*args, **kwargs):
        final = calls[0] % (eomt.num_blocks + 1) == eomt.num_blocks
        calls[0] += 1
        key = 'forward.final_predict' if final else 'forward.mask_module'
        return timed(key, original_predict)(*args, **kwargs)

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(
            eomt.backbone, 'forward_block', timed('forward.blocks', eomt.backbone.forward_block)))
        stack.enter_context(mock.patch.object(
            eomt, 'attn_mask', timed('forward.mask_module', eomt.attn_mask)))
        stack.enter_context(mock.patch.object(eomt, 'predict', predict))
        yield


def build_detector(args):
    from mmeomt.models import EoMTDetector
    num_things = args.num_classes - args.num_stuff
    return EoMTDetector(
        eomt=dict(
            type='mmeomt.EoMT',
            backbone=dict(type='mmeomt.EoMTViT', arch=args.arch, img_size=args.img_size,
                          with_cp=args.with_cp),
            num_classes=args.num_classes,
            num_queries=args.num_queries,
            num_blocks=NUM_BLOCKS[args.arch]),
        loss=dict(type='mmeomt.EoMTLoss', num_points=args.num_points),
        num_things_classes=num_things,
        num_stuff_classes=args.num_stuff).to(args.device).train()


def synthetic_batch(args):
    """``(B, 3, H, W)`` random normalised images and their ``DetDataSample``s.

    Per image ``--num-targets`` things (random boxes of random thing classes, drawn over each
    other) and, in ``gt_sem_seg``, three horizontal bands of random stuff classes under them.
    """
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData
    g = torch.Generator().manual_seed(args.seed)
    size = args.img_size
    num_things = args.num_classes - args.num_stuff
    images = torch.randn(args.batch_size, 3, size, size, generator=g)
    samples = []
    for _ in range(args.batch_size):
        corners = torch.randint(0, size, (args.num_targets, 2, 2), generator=g).sort(1).values
        masks = torch.zeros(args.num_targets, size, size, dtype=torch.uint8)
        for mask, ((y0, x0), (y1, x1)) in zip(masks, corners.tolist()):
            mask[y0:y1 + 1, x0:x1 + 1] = 1
        labels = torch.randint(0, num_things, (args.num_targets, ), generator=g)
        sem_seg = torch.full((1, size, size), 255, dtype=torch.long)
        if args.num_stuff:
            bands = torch.randint(num_things, args.num_classes, (3, ), generator=g)
            sem_seg[0] = bands.repeat_interleave(-(-size // 3))[:size, None]
        for mask, label in zip(masks.bool(), labels):
            sem_seg[0][mask] = label
        sample = DetDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
            batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(
            labels=labels.to(args.device), masks=BitmapMasks(masks.numpy(), size, size))
        sample.gt_sem_seg = PixelData(sem_seg=sem_seg.to(args.device))
        samples.append(sample)
    return images.to(args.device), samples


def build_optim_wrapper(model, args, old_optim: bool):
    """The published optim wrapper (EoMTOptimWrapperConstructor); ``old_optim``: not fused."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper as build
    cfg = copy.deepcopy(Config.fromfile(str(OPTIM_CONFIG)).optim_wrapper)
    if args.amp:
        cfg.update(type='mmeomt.AmpOptimWrapper', dtype='bfloat16')
    if old_optim:
        cfg.optimizer['fused'] = False  # torch's default implementation
    return build(model, cfg)


class Variant:
    """One model copy with its loss and optim wrapper, and its per-iteration times (s)."""

    def __init__(self, name: str, model, criterion, optim_wrapper, forward: Callable):
        self.name, self.model, self.criterion = name, model, criterion
        self.optim_wrapper, self.forward = optim_wrapper, forward
        self.iterations: List[Dict[str, float]] = []
        self.loss_value = None
        self.peak_cuda_mib = 0.0

    def step(self, images, samples, device, breakdown: bool, record: bool) -> None:
        timer = Timer(device)
        model, optim_wrapper = self.model, self.optim_wrapper
        if device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        parts = timed_forward_parts(model.eomt, timer) if breakdown else nullcontext()
        with optim_wrapper.optim_context(model):
            with parts, timer('forward'):
                mask_logits, class_logits = self.forward(images)
            with timer('targets'):
                targets = [model.targets(s, tuple(images.shape[-2:])) for s in samples]
            with timer('loss'):
                losses = self.criterion.loss(mask_logits, class_logits, targets,
                                             [s.metainfo for s in samples])
                loss, _ = model.parse_losses(losses)
        with timer('backward'):
            optim_wrapper.backward(loss)
        with timer('optimiser'):
            optim_wrapper.step()
            optim_wrapper.zero_grad()
        total = time.perf_counter() - start
        if record:
            seconds = dict(timer.seconds, total=total)
            if breakdown:
                seconds['forward.other'] = seconds['forward'] - sum(
                    seconds.get(k, 0.0) for k in FORWARD_PARTS)
            self.iterations.append(seconds)
            self.loss_value = loss.item()
            if device.type == 'cuda':
                self.peak_cuda_mib = max(self.peak_cuda_mib,
                                         torch.cuda.max_memory_allocated() / 2**20)

    def summary(self) -> Dict[str, float]:
        """Median ms per iteration of every timed key."""
        keys = self.iterations[0].keys()
        return {k: 1000 * sorted(it[k] for it in self.iterations)[len(self.iterations) // 2]
                for k in keys}


def build_variants(args, device) -> List[Variant]:
    from mmeomt.models.losses.per_image_loss import PerImageEoMTLoss
    torch.manual_seed(args.seed)
    model = build_detector(args)
    model.eomt.attn_mask_probs.fill_(args.masked_prob)
    specs = [('current', False, False)]
    if args.compare_old_loss:
        specs.append(('old loss', True, False))
    if args.compare_old_optim:
        specs.append(('old optimiser', False, True))
    if args.compare_old_loss and args.compare_old_optim:  # the code before both changes
        specs.append(('old loss+optim', True, True))
    variants = []
    for name, old_loss, old_optim in specs:
        replica = copy.deepcopy(model)
        criterion = replica.criterion
        if old_loss:
            criterion = PerImageEoMTLoss(num_classes=args.num_classes, num_points=args.num_points)
        forward = torch.compile(replica.eomt) if args.compile else replica.eomt
        variants.append(Variant(name, replica, criterion,
                                build_optim_wrapper(replica, args, old_optim), forward))
    return variants


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='tiny', choices=sorted(NUM_BLOCKS))
    parser.add_argument('--img-size', type=int, default=128)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--num-queries', type=int, default=20)
    parser.add_argument('--num-classes', type=int, default=8, help='things + stuff')
    parser.add_argument('--num-stuff', type=int, default=3, help='stuff classes among them')
    parser.add_argument('--num-targets', type=int, default=8, help='things per image')
    parser.add_argument('--num-points', type=int, default=512,
                        help='points per mask of the loss (published: 12544)')
    parser.add_argument('--masked-prob', type=float, default=1.0,
                        help='masked-attention probability of every masked block, 0..1')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast')
    parser.add_argument('--compile', action='store_true', help='torch.compile the network')
    parser.add_argument('--with-cp', action='store_true',
                        help='activation checkpointing of the ViT blocks (backbone with_cp); '
                        'their recomputation in the backward is timed under forward.blocks')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--compare-old-loss', action='store_true',
                        help='also time the per-image loss (PerImageEoMTLoss)')
    parser.add_argument('--compare-old-optim', action='store_true',
                        help="also time torch's default (unfused) AdamW")
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--config', help="time this training config's train_step on its data "
                        '(the model options above are then unused)')
    parser.add_argument('--code', nargs='+', metavar='DIR',
                        help='with --config: checkouts of mmeomt to time, one process each')
    parser.add_argument('--rounds', type=int, default=3,
                        help='with --code: alternating rounds of each checkout')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.code and not args.config:
        parser.error('--code needs --config')
    if args.img_size % 16:
        parser.error(f'--img-size must be a multiple of the patch size 16, got {args.img_size}')
    if not 0 <= args.masked_prob <= 1:
        parser.error(f'--masked-prob must be in [0, 1], got {args.masked_prob}')
    if not 0 <= args.num_stuff < args.num_classes:
        parser.error('--num-stuff must leave at least one thing class')
    if args.iters < 1:
        parser.error('--iters must be at least 1')
    return args


def report(args, results: Dict[str, Dict[str, float]], peak_rss_mib: float) -> None:
    names = list(results)
    print(f'EoMT-{args.arch[0].upper()} training step, {args.img_size}x{args.img_size}, batch '
          f'{args.batch_size}, {args.num_queries} queries, {args.num_classes} classes, '
          f'{args.num_points} points, masked prob {args.masked_prob}, {args.device} '
          f'({args.threads} threads), {"bf16 autocast" if args.amp else "fp32"}'
          f'{", compiled" if args.compile else ""}'
          f'{", activation checkpointing" if args.with_cp else ""}; median ms of {args.iters}:')
    keys = [k for k in ROWS if k in results['current']]
    header = f'  {"":<24}' + ''.join(f'{n:>15}' for n in names)
    header += ''.join(f'{n + " / current":>26}' for n in names[1:])
    print(header)
    for key in keys:
        label = ('  ' + key.split('.')[1].replace('_', ' ')) if '.' in key else key
        row = f'  {label:<24}' + ''.join(f'{results[n][key]:15.1f}' for n in names)
        row += ''.join(f'{results[n][key] / max(results["current"][key], 1e-9):25.2f}x'
                       for n in names[1:])
        print(row)
    print(f'  peak memory (ru_maxrss, all variants): {peak_rss_mib:.0f} MiB')


def time_config_step(args) -> dict:
    """Median ms of ``model.train_step`` of ``args.config`` on 4 of its batches, this process."""
    import importlib

    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper as build
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import Runner
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    for module in cfg.get('custom_imports', {}).get('imports', []):
        importlib.import_module(module)
    torch.manual_seed(args.seed)
    model = MODELS.build(cfg.model).to(args.device).train()
    optim_wrapper = build(model, cfg.optim_wrapper)
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    # Up to 4 batches (a finite sampler over a small dataset may give fewer).
    batches = list(itertools.islice(Runner.build_dataloader(loader_cfg, seed=args.seed), 4))
    if not batches:
        raise SystemExit(f'{args.config}: its train dataloader gives no batch')
    device = torch.device(args.device)
    seconds = []
    for i in range(args.warmup + args.iters):
        torch.manual_seed(args.seed + i)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.train_step(batches[i % len(batches)], optim_wrapper)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    import mmeomt
    return dict(ms=1000 * sorted(seconds[args.warmup:])[args.iters // 2],
                code=str(Path(mmeomt.__file__).resolve().parents[1]),
                peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def compare_code(args) -> dict:
    """:func:`time_config_step` of every ``--code`` checkout, in alternating rounds."""
    roots = {code: Path(code).resolve() for code in args.code}
    for code, root in roots.items():
        if not (root / 'mmeomt' / '__init__.py').is_file():
            raise SystemExit(f'--code {code}: no mmeomt package in {root}')
    runs = {code: [] for code in args.code}
    for _ in range(args.rounds):
        for code, root in roots.items():
            command = [sys.executable, __file__, '--child', '--config',
                       str(root / args.config), '--device', args.device,
                       '--threads', str(args.threads), '--warmup', str(args.warmup),
                       '--iters', str(args.iters), '--seed', str(args.seed)]
            env = dict(os.environ, PYTHONPATH=str(root))
            out = subprocess.run(command, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f'--code {code} failed:\n{out.stderr[-3000:]}')
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if Path(result['code']) != root:
                raise SystemExit(f'--code {code}: the process imported mmeomt from '
                                 f'{result["code"]}, not {root}')
            runs[code].append(result)
    first = args.code[0]
    medians = {code: sorted(r['ms'] for r in results)[len(results) // 2]
               for code, results in runs.items()}
    print(f'train_step of {args.config}, {args.device} ({args.threads} threads); median ms of '
          f'{args.iters} steps per process, median over {args.rounds} rounds:')
    for code, results in runs.items():
        peak = max(r['peak_rss_mib'] for r in results)
        rounds = ', '.join(f'{r["ms"]:.1f}' for r in results)
        print(f'  {code:<40} {medians[code]:8.1f} ms  ({medians[code] / medians[first]:.2f}x '
              f'{first}; rounds {rounds})  peak RSS {peak:.0f} MiB')
    return dict(args=vars(args), ms=medians, runs=runs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.config:
        torch.set_num_threads(args.threads)
        if args.child:
            print(json.dumps(time_config_step(args)))
            return {}
        if args.code:
            out = compare_code(args)
        else:
            out = dict(args=vars(args), **time_config_step(args))
            print(f'train_step of {args.config}: {out["ms"]:.1f} ms (median of {args.iters}), '
                  f'peak RSS {out["peak_rss_mib"]:.0f} MiB')
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(out, f, indent=2)
        return out
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    # Quiet: the optim-wrapper constructor logs its param groups once per variant.
    MMLogger.get_instance('train_benchmark', log_level='WARNING')
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = build_variants(args, device)
    images, samples = synthetic_batch(args)
    for i in range(args.warmup + args.iters):
        for variant in variants:
            torch.manual_seed(args.seed + i)
            variant.step(images, samples, device, breakdown=not args.compile,
                         record=i >= args.warmup)
    results = {v.name: v.summary() for v in variants}
    # ru_maxrss is in KiB on Linux.
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report(args, results, peak_rss_mib)
    out = dict(args=vars(args), ms=results, loss={v.name: v.loss_value for v in variants},
               peak_rss_mib=peak_rss_mib)
    if device.type == 'cuda':
        out['peak_cuda_mib'] = {v.name: v.peak_cuda_mib for v in variants}
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == '__main__':
    main()
