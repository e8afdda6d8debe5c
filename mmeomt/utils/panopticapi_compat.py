"""The part of COCO's ``panopticapi`` that mmdet imports, for machines without it.

mmdet's ``LoadPanopticAnnotations``, ``CocoPanopticMetric`` and ``DetInferencer`` import
``panopticapi.utils`` (``rgb2id``, ``id2rgb``) and ``panopticapi.evaluation`` (``PQStat``,
``VOID``, ``OFFSET``).  ``panopticapi`` is published on GitHub only, not on PyPI under its own
name, so a registry-only install cannot get it.  :func:`install` registers this module's
re-implementation under those names when the real package is absent (``import mmeomt`` calls it,
before mmdet binds the names at its import); the real one always wins when installed.

Where it differs from panopticapi (cocodataset/panopticapi; compared with its PyPI copy
``panopticapi-lite`` 0.2.0 in ``tests/test_utils/test_panopticapi_compat.py``):

* ``PQStat.pq_average`` over a selection in which no category occurs (no TP, FP or FN, e.g.
  ``isthing=False`` on a dataset without stuff) returns ``{'pq': 0, 'sq': 0, 'rq': 0, 'n': 0}``;
  panopticapi divides by ``n = 0`` and raises ``ZeroDivisionError``.  ``isthing`` may be left
  out (all categories); panopticapi requires it.  Every other result is panopticapi's.
* ``rgb2id`` of an ``(H, W, 3)`` array gives ``int32`` ids for every input dtype (panopticapi
  converts ``uint8`` input to ``int32`` and keeps any other dtype; the values are the same), and
  of a single colour sums Python ints (panopticapi sums the items as given, which overflows
  for ``uint8`` numpy scalars).
* Only these names exist: no ``pq_compute``, ``IdGenerator`` or format converters.
"""
import sys
import types
from collections import defaultdict

import numpy as np

VOID = 0
OFFSET = 256 * 256 * 256


def rgb2id(color):
    """Panoptic PNG colour -> segment id ``R + 256 G + 256^2 B``; ``(H, W, 3)`` or one triple."""
    if isinstance(color, np.ndarray) and color.ndim == 3:
        if color.dtype == np.uint8:
            # Bytes shifted into one int32 plane in place: 6 vs 15 ms on a 2943 x 1435 PNG.
            ids = color[..., 2].astype(np.int32)
            ids <<= 8
            ids |= color[..., 1]
            ids <<= 8
            ids |= color[..., 0]
            return ids
        color = color.astype(np.int32)
        return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]
    return int(color[0]) + 256 * int(color[1]) + 256 * 256 * int(color[2])


def id2rgb(id_map):
    """Segment ids -> panoptic PNG colours (inverse of :func:`rgb2id`)."""
    if isinstance(id_map, np.ndarray):
        if not np.issubdtype(id_map.dtype, np.integer):
            id_map = id_map.astype(np.int64)
        # (id // 256**i) % 256 (floor division, as panopticapi's) are the three low bytes of
        # the id's two's complement: one conversion to little-endian uint32 (which keeps them)
        # instead of six int64 divisions (17 vs 93 ms on a 2943 x 1435 map).
        ids = np.ascontiguousarray(id_map.astype('<u4'))
        return ids.view(np.uint8).reshape(*ids.shape, 4)[..., :3].copy()
    return [(int(id_map) // 256**i) % 256 for i in range(3)]


class PQStatCat:
    """Matched-IoU sum and TP/FP/FN counts of one category."""

    def __init__(self):
        self.iou = 0.0
        self.tp = 0
        self.fp = 0
        self.fn = 0

    def __iadd__(self, other: 'PQStatCat') -> 'PQStatCat':
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class PQStat:
    """Per-category PQ statistics; ``pq_average`` gives PQ = SQ * RQ averaged over categories."""

    def __init__(self):
        self.pq_per_cat = defaultdict(PQStatCat)

    def __getitem__(self, category_id) -> PQStatCat:
        return self.pq_per_cat[category_id]

    def __iadd__(self, other: 'PQStat') -> 'PQStat':
        for category_id, stat in other.pq_per_cat.items():
            self.pq_per_cat[category_id] += stat
        return self

    def pq_average(self, categories: dict, isthing=None):
        """Mean PQ/SQ/RQ over the categories (all, things only or stuff only) that occur.

        A category with no ground-truth and no predicted segment is left out of the mean (and
        reported as zeros per class), as in panopticapi.

        Returns:
            ``({'pq', 'sq', 'rq', 'n'}, {category_id: {'pq', 'sq', 'rq'}})``.
        """
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for category_id, info in categories.items():
            if isthing is not None and bool(info['isthing']) != isthing:
                continue
            stat = self.pq_per_cat[category_id]
            denominator = stat.tp + 0.5 * stat.fp + 0.5 * stat.fn
            if denominator == 0:
                per_class[category_id] = {'pq': 0.0, 'sq': 0.0, 'rq': 0.0}
                continue
            n += 1
            class_sq = stat.iou / stat.tp if stat.tp else 0.0
            class_rq = stat.tp / denominator
            per_class[category_id] = {'pq': stat.iou / denominator, 'sq': class_sq,
                                      'rq': class_rq}
            pq += stat.iou / denominator
            sq += class_sq
            rq += class_rq
        if n == 0:
            return {'pq': 0.0, 'sq': 0.0, 'rq': 0.0, 'n': 0}, per_class
        return {'pq': pq / n, 'sq': sq / n, 'rq': rq / n, 'n': n}, per_class


def install() -> bool:
    """Make ``import panopticapi`` work; returns False when the real package is installed."""
    try:
        import panopticapi  # noqa: F401
        return False
    except ImportError:
        pass
    package = types.ModuleType('panopticapi')
    package.__doc__ = __doc__
    package.__path__ = []  # a package, so that `from panopticapi import utils` works
    utils = types.ModuleType('panopticapi.utils')
    utils.rgb2id, utils.id2rgb = rgb2id, id2rgb
    evaluation = types.ModuleType('panopticapi.evaluation')
    evaluation.PQStat, evaluation.PQStatCat = PQStat, PQStatCat
    evaluation.VOID, evaluation.OFFSET = VOID, OFFSET
    package.utils, package.evaluation = utils, evaluation
    sys.modules.update({'panopticapi': package, 'panopticapi.utils': utils,
                        'panopticapi.evaluation': evaluation})
    return True
