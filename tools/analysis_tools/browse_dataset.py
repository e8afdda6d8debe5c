"""Draw what a config's data pipeline feeds the model: augmented images with their targets.

    python tools/analysis_tools/browse_dataset.py CONFIG --output-dir DIR
                                                  [--phase train|val|test] [--max-images N]
                                                  [--show] [--show-interval S]
                                                  [--cfg-options KEY=VALUE ...]

One PNG per sample, ``DIR/<index>_<image name>.png``, drawn by the config's visualiser
(mmdet's ``DetLocalVisualizer`` or mmseg's ``SegLocalVisualizer``, as their ``browse_dataset``
tools do):

* panoptic configs: the thing instances (masks, boxes, class names) and the stuff regions --
  the targets the EoMT loss receives (crowd regions are not targets and are not drawn);
* instance configs: the instances;
* semantic configs: the label map (``ignore_index`` pixels undrawn).

The dataset is that of ``train_dataloader`` (``--phase`` picks another), with its pipeline:
each run draws new random augmentations.
"""
import argparse
import os
import os.path as osp
import tempfile
from typing import List, Optional

import mmcv
import numpy as np
from mmengine.config import Config, DictAction


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Draw the data pipeline's output (images with their targets)")
    parser.add_argument('config', help='config file')
    parser.add_argument('--output-dir', required=True, help='folder for the PNGs')
    parser.add_argument('--phase', choices=['train', 'val', 'test'], default='train',
                        help='which dataloader\'s dataset and pipeline (default: train)')
    parser.add_argument('--max-images', type=int, default=20,
                        help='draw at most this many samples (default 20; 0 = all)')
    parser.add_argument('--show', action='store_true', help='also show each in a window')
    parser.add_argument('--show-interval', type=float, default=2,
                        help='seconds per shown image')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_dataloader.dataset.data_root=X')
    args = parser.parse_args(argv)
    if args.max_images < 0:
        parser.error(f'--max-images must be >= 0, got {args.max_images}')
    return args


def build(cfg: Config, phase: str):
    """The ``phase`` dataset and the config's visualiser (without storage backends)."""
    from mmengine.registry import DATASETS, VISUALIZERS, init_default_scope

    import mmeomt  # noqa: F401  (registers the datasets and transforms)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    loader = cfg.get(f'{phase}_dataloader')
    if not loader or 'dataset' not in loader:
        raise KeyError(f'{cfg.filename}: no {phase}_dataloader.dataset to browse')
    dataset = DATASETS.build(loader.dataset)
    # Its own instance (mmengine's visualisers are named singletons) that writes nothing by
    # itself: the PNGs are written here.
    visualizer = VISUALIZERS.build(dict(
        cfg.visualizer, name=f'browse_dataset_{os.getpid()}_{id(dataset)}',
        vis_backends=None, save_dir=None))
    visualizer.dataset_meta = dataset.metainfo
    return dataset, visualizer


def _fit(array: np.ndarray, data_sample, image_shape, value) -> np.ndarray:
    """Targets ``(..., h, w)`` brought to the network input ``image_shape``.

    Test pipelines load the annotations after resizing and padding the image (they are
    evaluated at the original size): such targets are resized (nearest) to ``img_shape``
    first.  Then they are padded bottom/right with ``value``, as the image was.
    """
    ori, resized = tuple(data_sample.ori_shape), tuple(data_sample.img_shape)
    if array.shape[-2:] == ori != resized:
        flat = array.reshape(-1, *ori)
        array = np.stack([mmcv.imresize(a, resized[::-1], interpolation='nearest')
                          for a in flat]).reshape(*array.shape[:-2], *resized)
    pad = [(0, 0)] * (array.ndim - 2) + [(0, image_shape[0] - array.shape[-2]),
                                         (0, image_shape[1] - array.shape[-1])]
    if min(p for _, p in pad) < 0:
        raise ValueError(f'{data_sample.img_path}: targets of size {array.shape[-2:]} do not '
                         f'fit the image {tuple(image_shape)}')
    return np.pad(array, pad, constant_values=value)


def drawable(data_sample, image_shape, num_things: Optional[int]):
    """The data sample as the visualisers draw it: numpy masks and boxes, at the image size
    (see :func:`_fit`).  For panoptic samples the label map keeps the stuff classes only: the
    things are drawn as instances."""
    from mmdet.structures.bbox import BaseBoxes
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    from mmengine.structures import PixelData
    data_sample = data_sample.cpu().numpy()
    if 'gt_instances' in data_sample:
        instances = data_sample.gt_instances
        masks = instances.get('masks', None)
        if isinstance(masks, (BitmapMasks, PolygonMasks)):
            masks = masks.to_ndarray()
        original = masks is not None and tuple(masks.shape[-2:]) == tuple(
            data_sample.ori_shape) != tuple(data_sample.img_shape)
        boxes = instances.get('bboxes', None)
        if isinstance(boxes, BaseBoxes):
            boxes = boxes.tensor.numpy()
        if boxes is not None and original:  # at the original size too
            scale = np.array(data_sample.img_shape[::-1] * 2, dtype=np.float32) / np.array(
                data_sample.ori_shape[::-1] * 2, dtype=np.float32)
            boxes = boxes * scale
        if boxes is not None:
            instances.bboxes = boxes
        if masks is not None:
            instances.masks = _fit(np.asarray(masks).astype(np.uint8), data_sample,
                                   image_shape, 0).astype(bool)
    if 'gt_sem_seg' in data_sample:
        sem_seg = data_sample.gt_sem_seg
        field = 'sem_seg' if 'sem_seg' in sem_seg else 'data'  # mmdet's name, mmseg's
        labels = np.asarray(sem_seg.get(field)).copy()
        ignore = sem_seg.metainfo.get('ignore_index', 255)
        if num_things is not None:
            labels[labels < num_things] = ignore
        # A new PixelData: one keeps the size of its first field.
        data_sample.gt_sem_seg = PixelData(
            metainfo=sem_seg.metainfo, **{field: _fit(labels, data_sample, image_shape, ignore)})
    return data_sample


def write_png(path: str, rgb: np.ndarray) -> None:
    """``rgb`` (H, W, 3) to ``path`` atomically (temp file in the same folder + os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(path), prefix='.browse.', suffix='.png')
    os.close(fd)
    try:
        if not mmcv.imwrite(rgb[..., ::-1], tmp):
            raise OSError(f'could not write {path}')
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


def browse(cfg: Config, output_dir: str, phase: str = 'train', max_images: int = 20,
           show: bool = False, show_interval: float = 2) -> List[str]:
    """Draw up to ``max_images`` samples (0: all) to ``output_dir``; returns the PNG paths."""
    dataset, visualizer = build(cfg, phase)
    scope = cfg.get('default_scope', 'mmdet')
    # Panoptic detector configs: the label map's thing pixels are drawn as instances already.
    num_things = None
    if scope == 'mmdet' and cfg.model.get('num_stuff_classes', 0) > 0:
        num_things = cfg.model.num_things_classes
    os.makedirs(output_dir, exist_ok=True)
    count = len(dataset) if max_images == 0 else min(max_images, len(dataset))
    written = []
    for index in range(count):
        item = dataset[index]
        if item is None:
            raise RuntimeError(f'{cfg.filename}: the {phase} pipeline returned nothing for '
                               f'sample {index} (a transform filtered it out)')
        # (3, H, W) BGR uint8, as packed by PackDetInputs / PackSegInputs.
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1].copy()
        data_sample = drawable(item['data_samples'], image.shape[:2], num_things)
        name = osp.splitext(osp.basename(data_sample.img_path))[0]
        visualizer.add_datasample(name, image, data_sample, draw_gt=True, draw_pred=False,
                                  show=show, wait_time=show_interval)
        path = osp.join(output_dir, f'{index:05d}_{name}.png')
        write_png(path, visualizer.get_image())
        written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> List[str]:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    written = browse(cfg, args.output_dir, args.phase, args.max_images, args.show,
                     args.show_interval)
    print(f'{len(written)} images written to {args.output_dir}')
    return written


if __name__ == '__main__':
    main()
