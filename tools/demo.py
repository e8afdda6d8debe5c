"""EoMT end to end on the synthetic shapes: data -> training -> evaluation -> prediction PNGs.

    python tools/demo.py [--task panoptic|instance|semantic] [--backbone dinov2|dinov3]
                         [--work-dir DIR] [--data-root data/synthetic] [--max-iters N]
                         [--num-vis N] [--cfg-options KEY=VALUE ...]

1. Writes the synthetic dataset (``mmeomt/datasets/synthetic/``) under ``--data-root`` unless
   it is already there (the generator is idempotent).
2. Trains ``configs/eomt/synthetic/eomt_vit-t_synthetic-<task>.py`` (``--backbone dinov3``:
   ``eomt_dinov3-vit-t_synthetic-<task>.py``, the same on a DINOv3-style ViT with RoPE) from
   scratch with mmengine's Runner (log lines with the ETA, masked-attention probabilities and
   losses).
3. Evaluates on the validation split with the task's real metric (PQ, COCO mask AP, mIoU),
   prints a summary and writes it to ``<work_dir>/metrics.json``.
4. Draws ``--num-vis`` validation images as ``image | ground truth | prediction`` with mmdet's
   ``DetLocalVisualizer`` / mmseg's ``SegLocalVisualizer`` (``mmeomt.visualization``) into
   ``<work_dir>/vis/``.

``--max-iters N`` (or ``--cfg-options train_cfg.max_iters=N``) shortens or lengthens the run: the
config states its warm-ups and annealing windows as fractions of ``max_iters``, so a short run
still goes through every stage of the real one.
"""
import argparse
import json
import numbers
import os
import os.path as osp
import time
from typing import Dict, List, Optional

from mmengine.config import Config, DictAction
from mmengine.hooks import Hook

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    task: osp.join(ROOT, 'configs', 'eomt', 'synthetic', f'eomt_vit-t_synthetic-{task}.py')
    for task in ('panoptic', 'instance', 'semantic')
}
# The same tasks on the DINOv3-style encoder (RoPE instead of a position embedding).
DINOV3_CONFIGS = {
    task: osp.join(ROOT, 'configs', 'eomt', 'synthetic', f'eomt_dinov3-vit-t_synthetic-{task}.py')
    for task in CONFIGS
}
# The headline metric of each task as the evaluators name it, and its scale to percent.
HEADLINE = {
    'panoptic': ('coco_panoptic/PQ', 1.0, 'PQ'),
    'instance': ('coco/segm_mAP', 100.0, 'mask AP'),
    'semantic': ('mIoU', 1.0, 'mIoU'),
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train and evaluate EoMT on the synthetic shapes, then draw predictions')
    parser.add_argument('--task', choices=sorted(CONFIGS), default='panoptic')
    parser.add_argument('--backbone', choices=('dinov2', 'dinov3'), default='dinov2',
                        help='the encoder: a DINOv2-style ViT (learned position embedding) or '
                        'a DINOv3-style one (RoPE); both trained from scratch')
    parser.add_argument('--work-dir', help='logs, checkpoint, metrics.json and vis/ '
                        '(default: work_dirs/demo_<task>, demo_dinov3_<task>)')
    parser.add_argument('--data-root', default='data/synthetic',
                        help='synthetic dataset root, written there if absent')
    parser.add_argument('--num-train', type=int, default=None,
                        help='training images to generate (default: the config\'s '
                        'synthetic_data.num_train)')
    parser.add_argument('--num-val', type=int, default=None,
                        help='validation images to generate (default: the config\'s)')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='training iterations (default: the config\'s); the warm-ups and '
                        'annealing windows, fractions of the run, follow; validation and the '
                        'checkpoint are at the end')
    parser.add_argument('--num-vis', type=int, default=4,
                        help='validation images to draw into <work_dir>/vis/')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch\'s, one per core)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries last, e.g. train_dataloader.batch_size=4')
    args = parser.parse_args(argv)
    for name in ('num_train', 'num_val', 'max_iters', 'threads'):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f'--{name.replace("_", "-")} must be a positive int, got {value}')
    if args.num_vis < 0:
        raise SystemExit(f'--num-vis must be >= 0, got {args.num_vis}')
    return args


def set_data_root(cfg, task: str, data_root: str) -> None:
    """Point the config's datasets and evaluators at ``data_root`` (the generator's layout:
    ``coco/`` for panoptic and instance, ``ade/`` for semantic)."""
    old = cfg.data_root
    new = osp.join(data_root, 'ade' if task == 'semantic' else 'coco', '')
    cfg.data_root = new
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = new
    for name in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg[name]
        for key in ('ann_file', 'seg_prefix'):
            if isinstance(evaluator.get(key), str) and evaluator[key].startswith(old):
                evaluator[key] = new + evaluator[key][len(old):]


def build_config(args: argparse.Namespace) -> Config:
    from mmeomt.utils.tool_config import load_gt_masks
    configs = DINOV3_CONFIGS if args.backbone == 'dinov3' else CONFIGS
    cfg = Config.fromfile(configs[args.task])
    set_data_root(cfg, args.task, args.data_root)
    if args.max_iters is not None:
        # Only the run length: the scheduler and the annealing hook resolve the config's
        # fractions from it.  One validation and one checkpoint, at the end.
        cfg.train_cfg.max_iters = args.max_iters
        cfg.train_cfg.val_interval = args.max_iters
        cfg.default_hooks.checkpoint.interval = args.max_iters
    name = f'demo_dinov3_{args.task}' if args.backbone == 'dinov3' else f'demo_{args.task}'
    cfg.work_dir = args.work_dir or osp.join('work_dirs', name)
    cfg.launcher = 'none'
    # draw_predictions draws the ground truth of validation images, masks included.
    load_gt_masks(cfg, ['val_dataloader'])
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def make_data(cfg, args: argparse.Namespace) -> dict:
    from mmeomt.datasets.synthetic import generate_synthetic_dataset

    params = dict(cfg.get('synthetic_data', {}))
    if args.num_train is not None:
        params['num_train'] = args.num_train
    if args.num_val is not None:
        params['num_val'] = args.num_val
    start = time.perf_counter()
    manifest = generate_synthetic_dataset(args.data_root, **params)
    print(f'[demo] data: {args.data_root} {json.dumps(manifest["params"])} '
          f'({time.perf_counter() - start:.1f} s)', flush=True)
    return manifest


def draw_predictions(runner, task: str, num: int, out_dir: str) -> List[str]:
    """``image | ground truth | prediction`` PNGs of the first ``num`` validation images.

    The task's visualiser (the config's ``visualizer``) draws ground truth and prediction side
    by side; the input image is put in front.
    """
    import mmcv
    import torch

    from mmeomt.apis.inferencer import drop_empty_panoptic
    from mmeomt.visualization import draw_comparison, panoptic_gt_as_prediction

    os.makedirs(out_dir, exist_ok=True)
    dataset = runner.val_dataloader.dataset
    visualizer = runner.visualizer
    visualizer.dataset_meta = dataset.metainfo
    model = runner.model
    model.eval()
    paths = []
    for index in range(min(num, len(dataset))):
        data = dataset[index]
        with torch.no_grad():
            sample = model.test_step(
                dict(inputs=[data['inputs']], data_samples=[data['data_samples']]))[0]
        image = mmcv.imread(sample.img_path, channel_order='rgb')
        if task == 'panoptic':
            num_classes = len(dataset.metainfo['classes'])
            sample = drop_empty_panoptic(panoptic_gt_as_prediction(sample, num_classes),
                                         num_classes)
        name = osp.splitext(osp.basename(sample.img_path))[0]
        path = osp.join(out_dir, f'{task}_{name}.png')
        # Instances: EoMT keeps its top 100 (query, class) pairs, most of them low-scoring
        # duplicates; draw the confident ones (mmdet's default threshold is 0.3).
        extra = dict(pred_score_thr=0.5) if task == 'instance' else {}
        draw_comparison(visualizer, name, image, sample, path, **extra)
        paths.append(path)
    return paths


class EtaHook(Hook):
    """Prints once, early, how long the run will take, measured on this machine.

    Iterations ``skip`` to ``skip + measure`` (the first ones warm up) give the time per
    iteration; the remaining training follows from it, and the evaluation is estimated as
    ``val_cost`` training iterations per validation batch (measured on the synthetic set:
    a batch of 4 validation images, metric included, costs about half an iteration).
    At the end of training it prints the elapsed time beside the estimate.
    """
    priority = 'LOW'

    def __init__(self, start: float, skip: int = 5, measure: int = 20,
                 val_cost: float = 0.5):
        self.start, self.skip, self.measure, self.val_cost = start, skip, measure, val_cost
        self.t0 = None
        self.estimate = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        done = runner.iter + 1
        if done == self.skip:
            self.t0 = time.perf_counter()
        elif done == self.skip + self.measure and self.t0 is not None:
            per_iter = (time.perf_counter() - self.t0) / self.measure
            train = per_iter * (runner.max_iters - done)
            val = per_iter * self.val_cost * len(runner.val_dataloader)
            elapsed = time.perf_counter() - self.start
            self.estimate = elapsed + train + val
            runner.logger.info(
                f'[demo] ETA: {per_iter * 1000:.0f} ms per iteration on this machine -> '
                f'training done in ~{train / 60:.1f} min, evaluation ~{val:.0f} s, '
                f'the whole run ~{self.estimate / 60:.1f} min ({elapsed:.0f} s elapsed)')

    def after_train(self, runner) -> None:
        elapsed = time.perf_counter() - self.start
        estimate = f' (estimated {self.estimate / 60:.1f} min)' if self.estimate else ''
        runner.logger.info(f'[demo] done in {elapsed / 60:.1f} min{estimate}')


class KeepMetrics(Hook):
    """Keeps the metrics of the last validation (mmengine hands them to the hooks)."""
    priority = 'LOWEST'

    def __init__(self):
        self.metrics: Dict[str, float] = {}

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self.metrics = dict(metrics or {})


def summarise(task: str, metrics: Dict[str, float], seconds: Dict[str, float],
              evaluated: str) -> str:
    key, scale, label = HEADLINE[task]
    lines = [f'[demo] {task}: {label} = {metrics.get(key, float("nan")) * scale:.1f} '
             f'on {evaluated}']
    lines += [f'    {k}: {v:.4f}' if isinstance(v, float) else f'    {k}: {v}'
              for k, v in metrics.items()]
    lines.append('    time: ' + ', '.join(f'{k} {v:.0f} s' for k, v in seconds.items()))
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = build_config(args)
    from mmeomt.utils.tool_config import build_runner

    seconds = {}
    run_start = start = time.perf_counter()
    make_data(cfg, args)
    seconds['data'] = time.perf_counter() - start

    runner = build_runner(cfg)
    keep = KeepMetrics()
    runner.register_hook(keep)
    runner.register_hook(EtaHook(run_start))
    start = time.perf_counter()
    # The loop validates once at its last iteration (val_interval = max_iters).
    runner.train()
    seconds['train + val'] = time.perf_counter() - start
    # Plain floats: mmseg's metrics are numpy scalars, which json cannot write.
    metrics = {k: float(v) if isinstance(v, numbers.Real) else v
               for k, v in keep.metrics.items()}
    if not metrics:
        raise RuntimeError('[demo] training ended without a validation; keep '
                           'train_cfg.val_interval <= max_iters')

    start = time.perf_counter()
    paths = draw_predictions(runner, args.task, args.num_vis, osp.join(cfg.work_dir, 'vis'))
    seconds['vis'] = time.perf_counter() - start

    with open(osp.join(cfg.work_dir, 'metrics.json'), 'w', encoding='utf-8') as f:
        json.dump(dict(task=args.task, metrics=metrics, seconds=seconds), f, indent=2)
    val_set = runner.val_dataloader.dataset
    prefix = val_set.data_prefix.get('img', val_set.data_prefix.get('img_path'))
    print(summarise(args.task, metrics, seconds, f'the {len(val_set)} images of {prefix}'),
          flush=True)
    for path in paths:
        print(f'[demo] prediction: {path}', flush=True)
    return metrics


if __name__ == '__main__':
    main()
