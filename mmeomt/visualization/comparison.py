"""``image | ground truth | prediction`` panels, drawn by the task's own visualiser.

mmdet's ``DetLocalVisualizer`` and mmseg's ``SegLocalVisualizer`` draw ground truth and
prediction side by side; what they lack for a comparison is the input image in front, and (mmdet)
a panoptic ground truth drawn like a panoptic prediction: the loaders give ``gt_instances`` and
``gt_sem_seg``, which it would draw as instances and as a semantic map.
"""
import mmcv
import numpy as np
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmengine.structures import PixelData
from mmengine.visualization import Visualizer


def panoptic_gt_as_prediction(data_sample, num_classes: int):
    """A copy of ``data_sample`` whose ground truth is ``gt_panoptic_seg``, encoded as mmdet
    encodes panoptic predictions (``label + id * INSTANCE_OFFSET``, void = ``num_classes``).

    Args:
        data_sample: a ``DetDataSample`` with ``gt_instances`` (the things, bitmap masks
            ``(N, H, W)``) and ``gt_sem_seg`` (``(1, H, W)``, the class of every pixel, 255 =
            void).
        num_classes: things + stuff.

    Returns:
        the copy without ``gt_instances`` / ``gt_sem_seg``, with ``gt_panoptic_seg.sem_seg``
        ``(1, H, W)`` int64 (numpy, as the visualiser takes predictions).
    """
    pan = data_sample.gt_sem_seg.sem_seg[0].cpu().numpy().astype(np.int64)
    pan[pan == 255] = num_classes
    instances = data_sample.gt_instances
    masks = instances.masks.to_ndarray().astype(bool)
    for i, (label, mask) in enumerate(zip(instances.labels.tolist(), masks)):
        pan[mask] = label + (i + 1) * INSTANCE_OFFSET
    sample = data_sample.clone()
    del sample.gt_instances
    del sample.gt_sem_seg
    sample.gt_panoptic_seg = PixelData(sem_seg=pan[None])
    return sample


def draw_comparison(visualizer: Visualizer, name: str, image: np.ndarray, data_sample,
                    out_file: str, **kwargs) -> np.ndarray:
    """Draw ``image | ground truth | prediction`` into ``out_file`` (PNG) and return it.

    Args:
        visualizer: the task's ``DetLocalVisualizer`` / ``SegLocalVisualizer`` (its
            ``dataset_meta`` set).
        name: the image's name for the visualiser.
        image: ``(H, W, 3)`` uint8 RGB input.
        data_sample: ground truth and prediction, as the visualiser draws them.
        out_file: where the PNG goes.
        **kwargs: passed on to ``visualizer.add_datasample`` (e.g. ``pred_score_thr``).

    Returns:
        ``(H, 3W, 3)`` uint8 RGB.
    """
    visualizer.add_datasample(name, image, data_sample, draw_gt=True, draw_pred=True,
                              out_file=out_file, **kwargs)
    # What the visualiser wrote (mmseg's does not keep the stitched image for get_image).
    panels = mmcv.imread(out_file, channel_order='rgb')
    if panels.shape[0] != image.shape[0]:
        panels = mmcv.imresize(panels, (panels.shape[1] * image.shape[0] // panels.shape[0],
                                        image.shape[0]))
    stitched = np.concatenate([image, panels], axis=1)
    mmcv.imwrite(stitched[..., ::-1], out_file)
    return stitched
