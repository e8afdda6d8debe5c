"""Our stand-in for panopticapi: what mmdet's panoptic loading and PQ metric rely on."""
import numpy as np
import pytest

import mmeomt  # noqa: F401  (installs the stand-in when panopticapi is absent)
from mmeomt.utils.panopticapi_compat import PQStat, id2rgb, rgb2id


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255], [256, 65536 + 7, 256**3 - 1]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[1, 1].tolist() == [7, 0, 1]
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    assert rgb2id([7, 0, 1]) == 65543 and id2rgb(65543) == [7, 0, 1]


def test_pq_average_matches_hand_computation():
    stat = PQStat()
    # Thing class 1: one match at IoU 0.8, one false positive, one miss.
    stat[1].tp, stat[1].iou, stat[1].fp, stat[1].fn = 1, 0.8, 1, 1
    # Stuff class 2: two matches, IoU 0.9 and 0.7.
    other = PQStat()
    other[2].tp, other[2].iou = 2, 1.6
    stat += other
    categories = {1: {'isthing': 1}, 2: {'isthing': 0}, 3: {'isthing': 0}}  # 3 never occurs
    things, per_class = stat.pq_average(categories, isthing=True)
    assert things == pytest.approx({'pq': 0.4, 'sq': 0.8, 'rq': 0.5, 'n': 1})
    stuff, _ = stat.pq_average(categories, isthing=False)
    assert stuff == pytest.approx({'pq': 0.8, 'sq': 0.8, 'rq': 1.0, 'n': 1})
    everything, per_class = stat.pq_average(categories)
    assert everything == pytest.approx({'pq': 0.6, 'sq': 0.8, 'rq': 0.75, 'n': 2})
    assert per_class[3] == {'pq': 0.0, 'sq': 0.0, 'rq': 0.0}


def test_empty_selection_gives_zeros_not_an_error():
    assert PQStat().pq_average({1: {'isthing': 1}}, isthing=False)[0]['n'] == 0


def test_mmdet_uses_it():
    from mmdet.evaluation.functional import panoptic_utils
    from mmdet.evaluation.metrics import coco_panoptic_metric
    assert panoptic_utils.PQStat is not None and coco_panoptic_metric.rgb2id is not None
