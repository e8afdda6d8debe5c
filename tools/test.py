"""Evaluate an EoMT checkpoint (the interface of mmdet's and mmseg's ``test.py``).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE_OR_DIR]
                         [--show] [--show-dir DIR] [--skip-bad-images] [--tensorboard]
                         [--cfg-options ...] [--launcher ...]

``--out``: panoptic/instance configs (mmdet scope) dump the raw predictions to a ``.pkl``
(mmdet's ``DumpDetResults``); semantic configs (mmseg scope) write the predicted label maps as
PNGs into that directory (mmseg's ``IoUMetric(output_dir=...)``).

``--show-dir DIR``: every test image is drawn by the config's visualisation hook (mmdet's
``DetVisualizationHook``, mmseg's ``SegVisualizationHook``) as ``ground truth | prediction``
side by side (the prediction alone where the test set has no annotations):

* panoptic/instance configs: ``DIR/<image file name>`` (the input's name and format, as
  mmdet's tool; a relative DIR lies under ``<work_dir>/<timestamp>/``);
* semantic configs: ``DIR/vis_data/vis_image/test_<image file name>_<step>.png`` (mmseg's
  layout, through the visualiser's ``LocalVisBackend``; a TensorBoard backend in the config
  receives the images too).

``--skip-bad-images``: images (and segment PNGs) that are missing or cannot be decoded are left
out with a warning naming them, instead of stopping the run; the metrics are computed on the
others and report ``skipped_images`` (``mmeomt.SkipUnreadableImages``,
``mmeomt.SkippedImagesHook``).
"""
import argparse
import os
from typing import List, Optional

from mmengine.config import Config, ConfigDict, DictAction

from mmeomt.utils.tool_config import (add_tensorboard, build_runner, load_gt_masks,
                                       load_tool_config)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (evaluate) an EoMT model')
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for the evaluation logs and metrics')
    parser.add_argument('--out', help='where to dump the predictions (.pkl for panoptic/instance '
                        'configs, a directory of PNGs for semantic configs)')
    parser.add_argument('--show', action='store_true', help='show the predictions in a window')
    parser.add_argument('--show-dir', help='directory to save visualised predictions to')
    parser.add_argument(
        '--tensorboard', action='store_true',
        help='also log to TensorBoard (mmengine TensorboardVisBackend; event files under '
        '<work_dir>/<timestamp>/vis_data)')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds per shown image')
    parser.add_argument('--skip-bad-images', action='store_true',
                        help='leave out images whose files cannot be read (logged, counted in '
                        'the metrics as skipped_images) instead of stopping')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_dataloader.batch_size=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need default_hooks.visualization in the config')
    hook['draw'] = True
    # The test pipelines leave the ground-truth masks out unless they are drawn.
    load_gt_masks(cfg, ['test_dataloader'])
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if cfg.get('default_scope') == 'mmseg':
        # mmseg's hook draws every `interval`-th batch (its default 50), mmdet's every image:
        # every image here too, unless --cfg-options sets an interval.
        hook.setdefault('interval', 1)
    if args.show_dir:
        if cfg.get('default_scope') == 'mmseg':
            # SegVisualizationHook draws through the visualizer's storage backends, into
            # save_dir/vis_data/vis_image (mmseg's tools/test.py sets save_dir the same way).
            cfg.visualizer['save_dir'] = args.show_dir
        else:
            # DetVisualizationHook writes <image name> there; a relative path is taken
            # relative to <work_dir>/<timestamp> (mmdet's convention).
            hook['test_out_dir'] = args.show_dir


def _add_output(cfg: Config, out: str) -> None:
    if cfg.get('default_scope') == 'mmseg':
        evaluators = cfg.test_evaluator
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            if evaluator.get('type') == 'IoUMetric':
                evaluator['output_dir'] = out
                evaluator['keep_results'] = True
        return
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file for this config, got {out!r}')
    evaluators = cfg.test_evaluator
    evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
    cfg.test_evaluator = evaluators + [ConfigDict(type='DumpDetResults', out_file_path=out)]


def _takes_check_files(dataset_type) -> bool:
    import inspect

    from mmeomt.registry import DATASETS
    if not (isinstance(dataset_type, str) and dataset_type.startswith('mmeomt.')):
        return False
    cls = DATASETS.get(dataset_type)
    return cls is not None and 'check_files' in inspect.signature(cls).parameters


def _skip_bad_images(cfg: Config) -> None:
    dataset = cfg.test_dataloader.dataset
    if _takes_check_files(dataset.get('type')):
        # mmeomt's COCO datasets refuse missing files when they are built; here the wrapper
        # leaves them out (and reports them) with the undecodable ones.
        dataset.setdefault('check_files', False)
    cfg.test_dataloader.dataset = ConfigDict(type='mmeomt.SkipUnreadableImages',
                                             dataset=dataset)
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        ConfigDict(type='mmeomt.SkippedImagesHook')]


def build_config(args: argparse.Namespace) -> Config:
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.tensorboard:
        add_tensorboard(cfg)
    if args.skip_bad_images:
        _skip_bad_images(cfg)
    if args.show or args.show_dir:
        _enable_visualization(cfg, args)
    if args.out is not None:
        _add_output(cfg, args.out)
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    build_runner(build_config(args)).test()


if __name__ == '__main__':
    main()
