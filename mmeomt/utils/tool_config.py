"""What tools/train.py and tools/test.py share: the config as mmdet's and mmseg's tools make it,
and the Runner built from it."""
import os.path as osp
from typing import Optional

from mmengine.config import Config


def load_tool_config(path: str, cfg_options: Optional[dict] = None,
                     work_dir: Optional[str] = None, launcher: str = 'none') -> Config:
    """``path`` with ``--cfg-options`` merged and ``--launcher`` set.

    The work dir is ``work_dir`` if given, else the config's own ``work_dir``, else
    ``./work_dirs/<config name>`` (mmdet's and mmseg's rule).
    """
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


# mmdet's annotation loaders whose ground-truth masks the test pipelines leave out.
MASK_LOADERS = ('LoadAnnotations', 'LoadPanopticAnnotations', 'mmdet.LoadAnnotations',
                'mmdet.LoadPanopticAnnotations', 'mmeomt.LoadPanopticAnnotations')


def load_gt_masks(cfg: Config, loaders=('val_dataloader', 'test_dataloader')) -> int:
    """Make the panoptic / instance evaluation pipelines of ``cfg`` load the ground-truth masks.

    The configs' test pipelines load boxes, labels (and the panoptic semantic map) but no
    masks: the metrics read the ground truth from the annotation files, and the masks (one
    full-size array per object, 50 MB for 12 things at 2943 x 1435, through the dataloader's
    pipe) are only drawn.  The tools that draw the ground truth (``tools/test.py --show /
    --show-dir``, ``tools/demo.py``) call this.  mmseg configs are left as they are (their
    ``LoadAnnotations`` loads the label map, which the metric uses).

    Returns:
        how many loaders were switched.
    """
    if cfg.get('default_scope') == 'mmseg':
        return 0
    switched = 0

    def visit(node) -> None:
        nonlocal switched
        if isinstance(node, dict):
            if node.get('type') in MASK_LOADERS and not node.get('with_mask', True):
                node['with_mask'] = True
                switched += 1
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    for name in loaders:
        if cfg.get(name) is not None:
            visit(cfg[name].get('dataset'))
    return switched


TENSORBOARD_BACKEND = 'TensorboardVisBackend'


def add_tensorboard(cfg: Config) -> None:
    """Add mmengine's ``TensorboardVisBackend`` to ``cfg.visualizer.vis_backends``.

    The same as writing, in a config that inherits a published one::

        visualizer = dict(vis_backends=[dict(type='LocalVisBackend'),
                                        dict(type='TensorboardVisBackend')])

    The local backend stays (it writes the ``scalars.json`` that log tools read); the event
    files go to ``<work_dir>/<timestamp>/vis_data/``.  A config switch through
    ``--cfg-options`` is not possible: mmengine parses no dicts there, and a ``_base_`` file
    cannot add to a list that another ``_base_`` file defines.
    """
    try:
        import torch.utils.tensorboard  # noqa: F401  (what mmengine's backend imports)
    except ImportError as e:
        raise ImportError('--tensorboard needs the tensorboard package: pip install -r '
                          'requirements/optional.txt (tools/setup_env.sh installs it)') from e
    visualizer = cfg.get('visualizer')
    if visualizer is None:
        raise KeyError(f'--tensorboard: {cfg.filename} has no visualizer to add the '
                       'TensorBoard backend to')
    backends = list(visualizer.get('vis_backends') or [])
    if not any(b.get('type') in (TENSORBOARD_BACKEND, f'mmengine.{TENSORBOARD_BACKEND}')
               for b in backends):
        backends.append(dict(type=TENSORBOARD_BACKEND))
    visualizer['vis_backends'] = backends


def build_runner(cfg: Config):
    """mmengine's ``Runner`` for ``cfg`` (or the config's ``runner_type``), after starting the
    process group where mmengine cannot (:func:`mmeomt.utils.dist.init_distributed`)."""
    # Registers mmeomt's hooks, schedulers and optim wrappers even for configs that name them
    # before anything imported mmeomt.engine.
    import mmeomt.engine  # noqa: F401
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .dist import init_distributed

    # torchrun on a machine without a GPU: gloo, which mmengine's init_dist cannot start.
    init_distributed(cfg)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
