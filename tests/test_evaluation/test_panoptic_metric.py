"""mmeomt.CocoPanopticMetric computes mmdet's CocoPanopticMetric's PQ statistics in memory: the
same per-category TP / FP / FN and IoU sums (float for float) and the same metrics, with and
without ``ann_file``, on constructed scenes with crowd regions, VOID, ignored classes, stuff
of class 0 (whose id is VOID's), ids the JSON does not list and an empty prediction."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

import mmeomt  # noqa: F401  (panopticapi stand-in before mmdet's import)
from mmdet.evaluation import CocoPanopticMetric as MMDetCocoPanopticMetric
from mmdet.evaluation.functional import INSTANCE_OFFSET

from mmeomt.datasets.image_check import UnreadableImageError
from mmeomt.datasets.synthetic.files import bbox
from mmeomt.evaluation import CocoPanopticMetric
from mmeomt.evaluation.panoptic_metric import compact_ids
from mmeomt.registry import METRICS
from mmeomt.utils.panopticapi_compat import id2rgb

# Labels 0-3 things, 4-5 stuff (label 4 = category id 0 in the JSON: its segment id may be 0).
CLASSES = ('circle', 'square', 'star', 'cross', 'sky', 'grass')
THINGS = CLASSES[:4]
CATEGORIES = [dict(id=i, name=name, isthing=int(name in THINGS), supercategory='x')
              for i, name in zip([1, 2, 3, 5, 0, 7], CLASSES)]
LABEL_TO_CAT = {label: c['id'] for label, c in enumerate(CATEGORIES)}
NUM_CLASSES = len(CLASSES)


def make_scene(rng, height, width, index):
    """A ground-truth id map (with VOID, a crowd region and an id the JSON omits), its
    segments, and a prediction in mmdet's encoding (label + instance * INSTANCE_OFFSET)."""
    gt = np.zeros((height, width), np.int64)
    segments = []
    # Stuff: the top and bottom halves (category 0 gets id 0 in half of the scenes).
    stuff_ids = (0 if index % 2 else 4000 + index, 7000 + index)
    gt[:height // 2] = stuff_ids[0]
    gt[height // 2:] = stuff_ids[1]
    for stuff_id, cat in zip(stuff_ids, (0, 7)):
        segments.append(dict(id=stuff_id, category_id=cat, iscrowd=0))
    gt[:, :3] = 0 if stuff_ids[0] else 99  # VOID, or an unlisted id where 0 is a segment
    boxes = []
    for k in range(6):
        h, w = rng.integers(4, height // 2, 2)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        cat = [1, 2, 3, 5][k % 4]
        seg_id = 256 * (k + 1) + 17 * index + 1
        gt[y:y + h, x:x + w] = seg_id
        segments.append(dict(id=seg_id, category_id=cat, iscrowd=int(k == 5)))
        boxes.append((y, x, h, w, cat))
    gt[-2:, -5:] = 123456  # in the PNG, not in the JSON: ignored by panopticapi
    segments = [dict(s, area=int((gt == s['id']).sum()), bbox=bbox(gt == s['id']))
                for s in segments if (gt == s['id']).any()]

    cat_to_label = {c: label for label, c in LABEL_TO_CAT.items()}
    pred = np.full((height, width), NUM_CLASSES, np.int64)  # "no object"
    pred[:height // 2 + int(rng.integers(-3, 4))] = cat_to_label[0]  # stuff label 4: id 4
    pred[height // 2 + 2:] = cat_to_label[7]
    for k, (y, x, h, w, cat) in enumerate(boxes):
        dy, dx = rng.integers(-2, 3, 2)
        label = cat_to_label[cat] if k != 1 else cat_to_label[[1, 2, 3, 5][(k + 1) % 4]]
        pred[max(y + dy, 0):y + dy + h, max(x + dx, 0):x + dx + w] = (
            label + (k + 1) * INSTANCE_OFFSET)
    pred[-6:, :6] = 255  # ignore_index
    pred[:2, -4:] = 3 + 9 * INSTANCE_OFFSET  # a small false positive on VOID-free ground
    return gt, segments, pred


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp('panoptic')
    rng = np.random.default_rng(0)
    images, annotations, samples = [], [], []
    for index in range(5):
        height, width = 40 + 8 * index, 56
        gt, segments, pred = make_scene(rng, height, width, index)
        file_name = f'{index:06d}.png'
        cv2.imwrite(str(root / file_name), id2rgb(gt)[:, :, ::-1])
        images.append(dict(id=index + 1, file_name=file_name.replace('.png', '.jpg'),
                           height=height, width=width, segm_file=file_name))
        annotations.append(dict(image_id=index + 1, file_name=file_name,
                                segments_info=segments))
        if index == 4:
            pred[:] = NUM_CLASSES  # nothing predicted
        samples.append(dict(
            img_id=index + 1, img_path=f'/images/{index:06d}.jpg', ori_shape=(height, width),
            segments_info=[dict(id=s['id'], category=[c['id'] for c in CATEGORIES].index(
                s['category_id']), is_thing=not s['iscrowd']) for s in segments],
            pred_panoptic_seg=dict(sem_seg=torch.from_numpy(pred)[None], ignore_index=255)))
    ann_file = root / 'panoptic.json'
    ann_file.write_text(json.dumps(dict(images=images, annotations=annotations,
                                        categories=CATEGORIES)))
    return str(root) + '/', str(ann_file), samples


def fresh(sample):
    """A copy with its own prediction tensor (mmdet's metric writes into it)."""
    prediction = dict(sample['pred_panoptic_seg'])
    prediction['sem_seg'] = prediction['sem_seg'].clone()
    return dict(sample, pred_panoptic_seg=prediction)


def evaluate(metric_type, scenes, with_ann_file):
    seg_prefix, ann_file, samples = scenes
    metric = metric_type(ann_file=ann_file if with_ann_file else None, seg_prefix=seg_prefix)
    metric.dataset_meta = dict(classes=CLASSES, thing_classes=THINGS,
                               stuff_classes=CLASSES[len(THINGS):])
    for start in range(0, len(samples), 2):
        metric.process({}, [fresh(s) for s in samples[start:start + 2]])
    stats = [{cat: vars(stat) for cat, stat in result.pq_per_cat.items()}
             for result in metric.results]
    return stats, metric.evaluate(len(samples))


@pytest.mark.parametrize('with_ann_file', [True, False])
def test_same_statistics_and_metrics_as_mmdet(scenes, with_ann_file):
    ours, ours_metrics = evaluate(CocoPanopticMetric, scenes, with_ann_file)
    theirs, their_metrics = evaluate(MMDetCocoPanopticMetric, scenes, with_ann_file)
    assert ours == theirs  # per image and category: tp, fp, fn, and the IoU sum exactly
    assert ours_metrics == their_metrics
    # The scenes exercise every rule: matches, misses, false positives, ignored predictions.
    totals = {key: sum(stat[key] for image in ours for stat in image.values())
              for key in ('tp', 'fp', 'fn')}
    assert all(totals.values()), totals
    assert 0 < their_metrics['coco_panoptic/PQ'] < 100


def test_same_error_as_mmdet_for_an_id_a_png_cannot_hold(scenes):
    seg_prefix, ann_file, samples = scenes
    sample = dict(samples[0])
    pred = sample['pred_panoptic_seg']['sem_seg'].clone()
    pred[0, :4, :4] = 1 + 17000 * INSTANCE_OFFSET  # 24 bits keep 222785, which no JSON lists
    sample['pred_panoptic_seg'] = dict(sample['pred_panoptic_seg'], sem_seg=pred)
    messages = []
    for metric_type in (CocoPanopticMetric, MMDetCocoPanopticMetric):
        metric = metric_type(ann_file=ann_file, seg_prefix=seg_prefix)
        metric.dataset_meta = dict(classes=CLASSES, thing_classes=THINGS)
        with pytest.raises(KeyError) as error:
            metric.process({}, [sample])
        messages.append(str(error.value))
    assert messages[0] == messages[1] and '222785' in messages[0]


def test_format_only_runs_mmdets_path(scenes, tmp_path):
    seg_prefix, ann_file, samples = scenes
    metric = CocoPanopticMetric(ann_file=ann_file, seg_prefix=seg_prefix, format_only=True,
                                outfile_prefix=str(tmp_path / 'results'))
    metric.dataset_meta = dict(classes=CLASSES, thing_classes=THINGS)
    metric.process({}, [fresh(s) for s in samples])
    assert metric.evaluate(len(samples)) == {}
    assert osp.isfile(tmp_path / 'results.panoptic.json')


def test_compact_ids_equals_numpy_unique():
    rng = np.random.default_rng(1)
    for ids in (rng.integers(0, 50, (30, 40)), rng.integers(0, 2**24, (30, 40)),
                rng.integers(-5, 2**40, (30, 40)), np.full((3, 3), 7)):
        labels, index, counts = compact_ids(ids)
        expected = np.unique(ids, return_inverse=True, return_counts=True)
        np.testing.assert_array_equal(labels, expected[0])
        np.testing.assert_array_equal(index.ravel(), expected[1].ravel())
        np.testing.assert_array_equal(counts, expected[2])
        assert index.dtype == np.int32 and index.shape == ids.shape


def test_registered_under_mmeomt():
    assert METRICS.get('mmeomt.CocoPanopticMetric') is CocoPanopticMetric
    assert issubclass(CocoPanopticMetric, MMDetCocoPanopticMetric)


def test_leaves_the_prediction_as_the_model_gave_it(scenes):
    """mmdet's metric writes VOID (0) into the prediction's void pixels in place, so hooks and
    dumps after it see class 0 there; ours reads the prediction only."""
    seg_prefix, ann_file, samples = scenes
    before = [s['pred_panoptic_seg']['sem_seg'].clone() for s in samples]
    metric = CocoPanopticMetric(ann_file=ann_file, seg_prefix=seg_prefix)
    metric.dataset_meta = dict(classes=CLASSES, thing_classes=THINGS)
    metric.process({}, [dict(s) for s in samples])
    for sample, original in zip(samples, before):
        assert torch.equal(sample['pred_panoptic_seg']['sem_seg'], original)


def test_bad_ground_truth_and_a_prediction_of_the_wrong_size_are_named(scenes, tmp_path):
    seg_prefix, ann_file, samples = scenes
    metric = CocoPanopticMetric(ann_file=ann_file, seg_prefix=seg_prefix)
    metric.dataset_meta = dict(classes=CLASSES, thing_classes=THINGS)
    sample = fresh(samples[0])
    sample['pred_panoptic_seg']['sem_seg'] = sample['pred_panoptic_seg']['sem_seg'][:, :-1]
    with pytest.raises(ValueError, match=r'000000.jpg is 39x56, its ground-truth PNG 40x56'):
        metric.process({}, [sample])
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / '000000.png').write_bytes(b'not a png')
    metric = CocoPanopticMetric(ann_file=ann_file, seg_prefix=str(broken) + '/')
    metric.dataset_meta = dict(classes=CLASSES, thing_classes=THINGS)
    with pytest.raises(UnreadableImageError, match='segment PNG .*000000.png: '):
        metric.process({}, [fresh(samples[0])])
    with pytest.raises(UnreadableImageError, match='000001.png: no such file'):
        metric.process({}, [fresh(samples[1])])
