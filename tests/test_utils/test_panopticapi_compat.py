"""Our stand-in for panopticapi: what mmdet's panoptic loading and PQ metric rely on, and the
same results as the real package (panopticapi-lite 0.2.0, run from .venv/reference) except
where its docstring says."""
import numpy as np
import pytest

import mmeomt  # noqa: F401  (installs the stand-in when panopticapi is absent)
from mmeomt.utils.panopticapi_compat import PQStat, id2rgb, rgb2id
from reference import run_reference


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


# ------------------------------------------------------------------------------------------
# Against the real panopticapi (panopticapi-lite 0.2.0, the PyPI copy of cocodataset/panopticapi,
# run in a subprocess from .venv/reference)
# ------------------------------------------------------------------------------------------
# (tp, fp, fn, iou sum) per category; 4 never occurs.
STATS = {1: (3, 1, 2, 2.4), 2: (0, 2, 1, 0.0), 3: (5, 0, 0, 4.5), 4: (0, 0, 0, 0.0),
         5: (1, 0, 3, 0.55)}
CATEGORIES = {1: {'isthing': 1}, 2: {'isthing': 1}, 3: {'isthing': 0}, 4: {'isthing': 0},
              5: {'isthing': 1}}

REAL_PANOPTICAPI = '''
import numpy as np
from panopticapi.evaluation import PQStat
from panopticapi.utils import id2rgb, rgb2id

def stat_of(stats):
    stat = PQStat()
    for category, (tp, fp, fn, iou) in stats.items():
        part = PQStat()
        part[category].tp, part[category].fp, part[category].fn = tp, fp, fn
        part[category].iou = iou
        stat += part
    return stat

stat = stat_of(inputs['stats'])
for name, isthing in (('all', None), ('things', True), ('stuff', False)):
    outputs[name] = stat.pq_average(inputs['categories'], isthing)
try:
    stat_of({}).pq_average({1: {'isthing': 1}}, False)
    outputs['empty'] = 'no error'
except ZeroDivisionError:
    outputs['empty'] = 'ZeroDivisionError'
outputs['rgb'] = id2rgb(inputs['ids'].numpy())
outputs['ids'] = rgb2id(outputs['rgb'])
outputs['one_rgb'], outputs['one_id'] = id2rgb(65543), rgb2id([7, 0, 1])
'''


def test_same_results_as_the_real_panopticapi(tmp_path):
    import torch
    ids = torch.tensor([[0, 1, 255], [256, 65536 + 7, 256**3 - 1]])
    real = run_reference(REAL_PANOPTICAPI, tmp_path, inputs=dict(
        stats=STATS, categories=CATEGORIES, ids=ids))
    ours = PQStat()
    for category, (tp, fp, fn, iou) in STATS.items():
        part = PQStat()
        part[category].tp, part[category].fp, part[category].fn = tp, fp, fn
        part[category].iou = iou
        ours += part
    for name, isthing in (('all', None), ('things', True), ('stuff', False)):
        summary, per_class = ours.pq_average(CATEGORIES, isthing)
        assert summary == pytest.approx(real[name][0]), name
        assert per_class.keys() == real[name][1].keys()
        for category, values in per_class.items():
            assert values == pytest.approx(real[name][1][category]), (name, category)
    # The one documented difference: an empty selection.
    assert real['empty'] == 'ZeroDivisionError'
    assert PQStat().pq_average({1: {'isthing': 1}}, False)[0] == {
        'pq': 0.0, 'sq': 0.0, 'rq': 0.0, 'n': 0}
    rgb = id2rgb(ids.numpy())
    np.testing.assert_array_equal(rgb, real['rgb'])
    assert rgb.dtype == real['rgb'].dtype
    np.testing.assert_array_equal(rgb2id(rgb), real['ids'])
    assert id2rgb(65543) == real['one_rgb'] and rgb2id([7, 0, 1]) == real['one_id']
