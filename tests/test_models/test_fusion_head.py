"""EoMTFusionHead gives mmdet's MaskFormerFusionHead results, pixel for pixel and score for score,
while resizing only the masks it keeps.

The reference is the path the detector used before: all queries' stride-4 logits upsampled to
the padded batch input, then mmdet's ``MaskFormerFusionHead.predict`` (crop to ``img_shape``,
resize to ``ori_shape``, select).  The logits are built so that many queries (>= 30) are kept,
masks overlap, stuff classes repeat, pairs of the instance top-k share queries, and one image
has no segment at all.  Both run with 2 threads (reductions may split across threads) and with
chunks small enough that every chunking path is taken.
"""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.seg_heads import MaskFormerFusionHead
from mmdet.structures import DetDataSample

from mmeomt.models.detectors import fusion_head as fusion_module
from mmeomt.models.detectors.fusion_head import EoMTFusionHead, chunks, row_sums

THINGS, STUFF = 5, 3
NUM_CLASSES = THINGS + STUFF
QUERIES = 64
BATCH_INPUT = (64, 80)
TEST_CFG = dict(panoptic_on=True, instance_on=True, max_per_image=50, object_mask_thr=0.8,
                iou_thr=0.8, filter_low_score=True)


@pytest.fixture(autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def logits(seed: int, kept: int = 36):
    """Class logits ``(Q, C + 1)`` with ``kept`` confident queries and stride-4 masks."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(QUERIES, NUM_CLASSES + 1, generator=g)
    cls[:, -1] += 2.0  # most queries lean to "no object"
    confident = torch.randperm(QUERIES, generator=g)[:kept]
    # Stuff classes repeat among the confident queries (merged segments).
    classes = torch.randint(0, NUM_CLASSES, (kept, ), generator=g)
    classes[:6] = THINGS  # one stuff class six times
    cls[confident, classes] += 8.0
    # Masks (16 x 20 cells): each confident query owns a 2 x 4 tile (+4 inside, -4 outside,
    # noisy), often grown by a cell into its neighbours: segments that win those cells, lose
    # them (a few pixels short) or lose too many (dropped by the area ratio).  The other
    # queries' masks are noise.
    masks = torch.randn(QUERIES, 16, 20, generator=g) - 4.0
    tiles = torch.randperm(40, generator=g)
    for q, tile in zip(confident.tolist(), tiles.tolist()):
        top, left = 2 * (tile // 5), 4 * (tile % 5)
        grow = (torch.rand(4, generator=g) < 0.15).long().tolist()
        masks[q, max(0, top - grow[0]):top + 2 + grow[1],
              max(0, left - grow[2]):left + 4 + grow[3]] += 8.0
    return cls, masks


def samples(shapes):
    return [DetDataSample(metainfo=dict(img_shape=img, ori_shape=ori,
                                        batch_input_shape=BATCH_INPUT))
            for img, ori in shapes]


SHAPES = [((60, 72), (157, 203)), ((64, 51), (64, 51)), ((33, 80), (99, 241))]


def run_both(cls, masks, data_samples, rescale=True, chunk_elements=None, **cfg):
    test_cfg = {**TEST_CFG, **cfg}
    ours = EoMTFusionHead(THINGS, STUFF, test_cfg=test_cfg,
                          **({} if chunk_elements is None else dict(
                              chunk_elements=chunk_elements)))
    mmdet = MaskFormerFusionHead(THINGS, STUFF, test_cfg=test_cfg)
    with torch.no_grad():
        new = ours.predict(cls, masks, data_samples, batch_input_shape=BATCH_INPUT,
                           rescale=rescale)
        upsampled = F.interpolate(masks, size=BATCH_INPUT, mode='bilinear', align_corners=False)
        old = mmdet.predict(cls, upsampled, data_samples, rescale=rescale)
    return new, old


def assert_same(new, old):
    assert len(new) == len(old)
    for a, b in zip(new, old):
        assert set(a) == set(b)
        if 'pan_results' in a:
            assert torch.equal(a['pan_results'].sem_seg, b['pan_results'].sem_seg)
        if 'ins_results' in a:
            for key in ('masks', 'labels', 'scores', 'bboxes'):
                x, y = a['ins_results'].get(key), b['ins_results'].get(key)
                assert x.dtype == y.dtype and torch.equal(x, y), key


@pytest.mark.parametrize('chunk_elements', [None, 3 * 157 * 203, 5 * 64 * 51, 1],
                         ids=['default', 'chunks-of-3', 'chunks-of-5', 'smallest'])
@pytest.mark.parametrize('strip_elements', [None, 300], ids=['strips', 'thin-strips'])
def test_identical_to_mmdet_fusion_head(chunk_elements, strip_elements, monkeypatch):
    if strip_elements is not None:  # strips of one or two rows: every strip path is taken
        monkeypatch.setattr(fusion_module, 'STRIP_ELEMENTS', strip_elements)
    pairs = [logits(seed) for seed in range(len(SHAPES))]
    cls = torch.stack([c for c, _ in pairs])
    masks = torch.stack([m for _, m in pairs])
    new, old = run_both(cls, masks, samples(SHAPES), chunk_elements=chunk_elements)
    assert_same(new, old)
    # What the comparison covered: many segments, merged stuff, queries shared by pairs.
    pan = new[0]['pan_results'].sem_seg
    assert len(torch.unique(pan)) >= 10
    scores, labels = cls[0].softmax(-1).max(-1)
    assert ((labels != NUM_CLASSES) & (scores > 0.8)).sum() >= 30
    top = cls[0].softmax(-1)[:, :-1].flatten().topk(50).indices // NUM_CLASSES
    assert len(torch.unique(top)) < len(top)


@pytest.mark.parametrize('cfg', [dict(filter_low_score=False), dict(iou_thr=0.3),
                                 dict(object_mask_thr=0.95), dict(max_per_image=7)])
def test_identical_for_other_settings(cfg):
    cls, masks = logits(3)
    new, old = run_both(cls[None], masks[None], samples(SHAPES[:1]), **cfg)
    assert_same(new, old)


def test_identical_without_rescale_and_without_any_segment():
    cls, masks = logits(4)
    new, old = run_both(cls[None], masks[None], samples(SHAPES[:1]), rescale=False)
    assert_same(new, old)
    assert new[0]['pan_results'].sem_seg.shape == (1, 60, 72)

    nothing = torch.zeros_like(cls)
    nothing[:, -1] = 10.0  # every query says "no object"
    new, old = run_both(nothing[None], masks[None], samples(SHAPES[:1]))
    assert_same(new, old)
    assert (new[0]['pan_results'].sem_seg == NUM_CLASSES).all()
    # No thing among the top-k pairs: no instance.
    stuff_only = torch.full_like(cls, -10.0)
    stuff_only[:, THINGS] = 10.0
    new, old = run_both(stuff_only[None], masks[None], samples(SHAPES[:1]), max_per_image=10)
    assert_same(new, old)
    assert new[0]['ins_results'].masks.shape == (0, 157, 203)


def test_only_the_kept_queries_are_resized(monkeypatch):
    resized = []
    original = fusion_module.resize_mask_logits

    def counting(selected, *args):
        resized.append(len(selected))
        return original(selected, *args)

    monkeypatch.setattr(fusion_module, 'resize_mask_logits', counting)
    cls, masks = logits(5)
    head = EoMTFusionHead(THINGS, STUFF, test_cfg=TEST_CFG, chunk_elements=4 * 157 * 203)
    head.predict(cls[None], masks[None], samples(SHAPES[:1]), batch_input_shape=BATCH_INPUT,
                 rescale=True)
    scores, labels = cls.softmax(-1).max(-1)
    kept = int(((labels != NUM_CLASSES) & (scores > 0.8)).sum())
    top = cls.softmax(-1)[:, :-1].flatten().topk(50)
    instance_queries = len(torch.unique(top.indices[top.indices % NUM_CLASSES < THINGS] //
                                        NUM_CLASSES))
    assert sum(resized) == kept + instance_queries
    assert max(resized) <= 5  # chunks of 4 (instance: a left-over mask joins the last one)


def test_chunks():
    for num in range(1, 12):
        for min_size in (1, 2):
            parts = list(chunks(num, pixels=10, max_elements=30, min_size=min_size))
            assert [i for p in parts for i in range(num)[p]] == list(range(num))
            assert all(p.stop - p.start <= 3 + (min_size - 1) for p in parts)
            if min_size == 2 and num > 1:  # never a lone mask
                assert all(p.stop - p.start >= 2 for p in parts)
    assert [p.stop - p.start for p in chunks(5, pixels=100, max_elements=30)] == [1] * 5


def test_row_sums_round_as_among_other_rows():
    x = torch.rand(3, 1_000_003, generator=torch.Generator().manual_seed(0))
    together = x.sum(1)
    for i in range(3):
        assert torch.equal(row_sums(x[i:i + 1], num_rows=3), together[i:i + 1])
        assert torch.equal(row_sums(x[i:i + 1], num_rows=1), x[i:i + 1].sum(1))


def test_one_query_in_every_instance_pair():
    """All top-k pairs come from one query: its mask is resized once and summed as mmdet's
    head sums the k copies."""
    _, masks = logits(6)
    cls = torch.zeros(QUERIES, NUM_CLASSES + 1)  # 1/9 each ...
    cls[7, :THINGS] = 30.0  # ... but query 7 is every thing class at once (1/5 each)
    new, old = run_both(cls[None], masks[None], samples(SHAPES[:1]), max_per_image=THINGS,
                        panoptic_on=False)
    assert_same(new, old)
    assert len(new[0]['ins_results']) == THINGS and new[0]['ins_results'].masks.any()


def test_predict_needs_the_batch_input_shape():
    cls, masks = logits(0)
    with pytest.raises(ValueError, match='batch_input_shape'):
        EoMTFusionHead(THINGS, STUFF, test_cfg=TEST_CFG).predict(cls[None], masks[None],
                                                                 samples(SHAPES[:1]))
