"""mmeomt.visualization: a panoptic ground truth drawn like a prediction, and the
``image | ground truth | prediction`` panels of the task's own visualiser."""
import numpy as np
import pytest
import torch
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmdet.visualization import DetLocalVisualizer
from mmengine.structures import InstanceData, PixelData
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer
from PIL import Image

from mmeomt.visualization import draw_comparison, panoptic_gt_as_prediction

H, W = 24, 32
CLASSES = ('circle', 'square', 'stripes')  # 2 things, 1 stuff


def panoptic_sample():
    sem = torch.full((1, H, W), 2, dtype=torch.long)  # stuff everywhere ...
    sem[0, :4] = 255  # ... but a void band
    masks = np.zeros((2, H, W), np.uint8)
    masks[0, 5:10, 5:10] = 1
    masks[1, 12:20, 15:30] = 1
    sample = DetDataSample()
    sample.gt_sem_seg = PixelData(sem_seg=sem)
    sample.gt_instances = InstanceData(labels=torch.tensor([1, 0]),
                                       masks=BitmapMasks(masks, H, W))
    return sample, masks


def test_panoptic_gt_is_encoded_as_mmdet_encodes_predictions():
    sample, masks = panoptic_sample()
    drawn = panoptic_gt_as_prediction(sample, num_classes=len(CLASSES))
    assert 'gt_instances' not in drawn and 'gt_sem_seg' not in drawn
    assert 'gt_instances' in sample  # a copy: the input keeps its ground truth
    pan = drawn.gt_panoptic_seg.sem_seg
    assert isinstance(pan, np.ndarray) and pan.shape == (1, H, W)
    assert (pan[0, :4] == len(CLASSES)).all()  # void
    assert (pan[0, masks[0] == 1] == 1 + 1 * INSTANCE_OFFSET).all()  # label + id * OFFSET
    assert (pan[0, masks[1] == 1] == 0 + 2 * INSTANCE_OFFSET).all()
    assert (pan[0, 4:][~masks[:, 4:].any(0)] == 2).all()  # stuff keeps its class


@pytest.mark.parametrize('task', ['panoptic', 'semantic'])
def test_panels_are_image_ground_truth_prediction(task, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    if task == 'panoptic':
        sample, _ = panoptic_sample()
        sample = panoptic_gt_as_prediction(sample, num_classes=len(CLASSES))
        sample.pred_panoptic_seg = PixelData(sem_seg=sample.gt_panoptic_seg.sem_seg.copy())
        visualizer = DetLocalVisualizer(name=f'cmp_{task}')
        visualizer.dataset_meta = dict(classes=CLASSES, thing_classes=CLASSES[:2],
                                       stuff_classes=CLASSES[2:],
                                       palette=[(220, 20, 60), (0, 130, 230), (90, 190, 190)])
    else:
        sample = SegDataSample()
        sem = torch.zeros((1, H, W), dtype=torch.long)
        sem[0, :, W // 2:] = 1
        sample.gt_sem_seg = PixelData(data=sem)
        sample.pred_sem_seg = PixelData(data=1 - sem)
        visualizer = SegLocalVisualizer(name=f'cmp_{task}')
        visualizer.dataset_meta = dict(classes=CLASSES[:2], palette=[(0, 0, 0), (255, 0, 0)])
    out_file = str(tmp_path / f'{task}.png')
    panels = draw_comparison(visualizer, task, image, sample, out_file)
    assert panels.shape == (H, 3 * W, 3) and panels.dtype == np.uint8
    assert (panels[:, :W] == image).all()  # the input, untouched, in front
    # Ground truth and prediction are drawn over the image, and differ where they disagree
    # (semantic) or agree (panoptic).
    assert not (panels[:, W:2 * W] == image).all()
    same = bool((panels[:, W:2 * W] == panels[:, 2 * W:]).all())
    assert same is (task == 'panoptic')
    written = np.asarray(Image.open(out_file))
    assert (written == panels).all()
