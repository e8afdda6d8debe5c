"""EoMTDetector: mmdet data samples in and out, for panoptic and instance segmentation.

Post-processing is checked on hand-built logits (the core is replaced by a stub) against the
rules of docs/method.md §6.
"""
import numpy as np
import pytest
import torch
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData, PixelData

from mmeomt.registry import MODELS

TINY_VIT = dict(type='mmeomt.EoMTViT', img_size=64,
                arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128))
PREPROCESSOR = dict(type='mmdet.DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=1)
THINGS, STUFF, QUERIES = 2, 2, 10


def detector_cfg(things=THINGS, stuff=STUFF, num_classes=None, **kwargs):
    num_classes = things + stuff if num_classes is None else num_classes
    return dict(
        type='mmeomt.EoMTDetector',
        eomt=dict(type='mmeomt.EoMT', backbone=TINY_VIT, num_classes=num_classes,
                  num_queries=QUERIES, num_blocks=2),
        loss=dict(type='mmeomt.EoMTLoss', num_points=256),
        num_things_classes=things, num_stuff_classes=stuff,
        data_preprocessor=PREPROCESSOR, **kwargs)


INSTANCE_TEST_CFG = dict(panoptic_on=False, instance_on=True, max_per_image=10)


def build(**kwargs):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(detector_cfg(**kwargs))


def data_sample(img_shape=(64, 64), ori_shape=(100, 120), crowd=False):
    """Two things, one crowd (optional), and stuff (classes 2 and 3) in gt_sem_seg."""
    h, w = img_shape
    meta = dict(img_shape=img_shape, ori_shape=ori_shape, scale_factor=(1.0, 1.0))
    sample = DetDataSample(metainfo=meta)
    masks = np.zeros((2, h, w), np.uint8)
    masks[0, 4:20, 4:20] = 1
    masks[1, 30:40, 10:50] = 1
    sample.gt_instances = InstanceData(labels=torch.tensor([0, 1]),
                                       masks=BitmapMasks(masks, h, w))
    if crowd:
        crowd_mask = np.zeros((1, h, w), np.uint8)
        crowd_mask[0, 50:, 50:] = 1
        sample.ignored_instances = InstanceData(labels=torch.tensor([0]),
                                                masks=BitmapMasks(crowd_mask, h, w))
    sem_seg = torch.full((1, h, w), 255, dtype=torch.uint8)
    sem_seg[0, 45:, :30] = 2
    sem_seg[0, :4, :] = 3
    sem_seg[0, 4:20, 4:20] = 0  # thing pixels carry thing classes: not stuff targets
    sem_seg[0, 50:, 50:] = 0  # the crowd region
    sample.gt_sem_seg = PixelData(sem_seg=sem_seg)
    return sample


def batch(samples):
    inputs = [torch.randint(0, 256, (3, *s.img_shape), dtype=torch.uint8) for s in samples]
    return dict(inputs=inputs, data_samples=samples)


def test_panoptic_targets_things_stuff_and_crowd():
    model = build()
    sample = data_sample(crowd=True)
    targets = model.targets(sample, input_shape=(64, 64))
    assert targets.labels.tolist() == [0, 1, 2, 3]
    assert targets.masks.shape == (4, 64, 64)
    assert targets.masks[0, 4:20, 4:20].all() and targets.masks[0].sum() == 16 * 16
    assert targets.masks[2].sum() == (64 - 45) * 30 and targets.masks[3].sum() == 4 * 64
    # 255 (unlabelled) and the crowd region belong to no target: they are background, as in
    # the authors' training (PackDetInputs has moved the crowd to ignored_instances).
    assert not targets.masks[:, 50:, 50:].any()
    assert not targets.masks[:, 20:30, 20:].any()

    # Instances flagged in gt_instances itself are dropped as well.
    sample.gt_instances.ignore_flags = torch.tensor([False, True])
    assert model.targets(sample, (64, 64)).labels.tolist() == [0, 2, 3]


@pytest.mark.parametrize('with_stuff', [True, False], ids=['panoptic', 'instance'])
@pytest.mark.parametrize('tensor_masks', [False, True], ids=['bitmap', 'tensor'])
def test_panoptic_targets_equal_mmdets_preprocess_panoptic_gt(with_stuff, tensor_masks):
    """Ours keeps the masks boolean; labels, order and mask values are mmdet's."""
    from mmdet.models.utils import preprocess_panoptic_gt

    from mmeomt.models.detectors.eomt_detector import panoptic_targets
    g = torch.Generator().manual_seed(0)
    things = torch.rand(5, 40, 56, generator=g) > 0.6
    labels = torch.tensor([3, 0, 3, 1, 2])
    # Stuff 4..6, 0..3 are things (ignored in sem_seg) and 255 unlabelled; 5 is absent.
    sem_seg = torch.tensor([0, 4, 6, 255, 2])[torch.randint(0, 5, (1, 40, 56), generator=g)]
    sem_seg = sem_seg if with_stuff else None
    bitmap = BitmapMasks(things.numpy().astype(np.uint8), 40, 56)
    want_labels, want_masks = preprocess_panoptic_gt(labels, bitmap, sem_seg, 4, 3)
    got_labels, got_masks = panoptic_targets(labels, things if tensor_masks else bitmap,
                                             sem_seg, 4, 3)
    assert got_masks.dtype == torch.bool
    assert torch.equal(got_labels, want_labels)
    assert torch.equal(got_masks.long(), want_masks)
    assert len(got_labels) == (7 if with_stuff else 5)


def test_targets_are_padded_like_the_batch_input():
    model = build()
    targets = model.targets(data_sample(img_shape=(48, 64)), input_shape=(64, 80))
    assert targets.masks.shape == (4, 64, 80)
    assert not targets.masks[:, 48:].any() and not targets.masks[..., 64:].any()
    assert targets.masks[2].sum() == (48 - 45) * 30
    with pytest.raises(ValueError, match='larger than the batch input'):
        model.targets(data_sample(), input_shape=(32, 64))


def test_instance_targets_ignore_sem_seg():
    model = build(stuff=0, test_cfg=INSTANCE_TEST_CFG)
    targets = model.targets(data_sample(), (64, 64))
    assert targets.labels.tolist() == [0, 1]


@pytest.mark.parametrize('stuff,test_cfg', [(STUFF, None), (0, INSTANCE_TEST_CFG)],
                         ids=['panoptic', 'instance'])
def test_train_step_and_predict(stuff, test_cfg):
    model = build(stuff=stuff, test_cfg=test_cfg)
    data = model.data_preprocessor(batch([data_sample(), data_sample()]), True)
    losses = model(**data, mode='loss')
    names = {'loss_cls', 'loss_mask', 'loss_dice'}
    # num_blocks = 2 masked blocks + the final prediction.
    assert set(losses) == names | {f'd{i}.{n}' for i in range(2) for n in names}
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.eomt.queries.weight.grad.abs().sum() > 0
    assert model.eomt.backbone.layers[0].attn.qkv.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(
            batch([data_sample(img_shape=(64, 48), ori_shape=(128, 96))]), False)
        results = model(**data, mode='predict')
        raw = model(**data, mode='tensor')
    assert raw[0][-1].shape == (1, QUERIES, 16, 12)
    assert raw[1][-1].shape == (1, QUERIES, THINGS + stuff + 1)
    result = results[0]
    if stuff:
        assert result.pred_panoptic_seg.sem_seg.shape == (1, 128, 96)
    else:
        assert result.pred_instances.masks.shape == (10, 128, 96)
        assert result.pred_instances.bboxes.shape == (10, 4)
        assert 'pred_panoptic_seg' not in result


def test_config_errors_are_named():
    with pytest.raises(ValueError, match=r'eomt.num_classes \(5\) must equal'):
        build(num_classes=5)
    with pytest.raises(ValueError, match='semantic_on'):
        build(test_cfg=dict(semantic_on=True))
    with pytest.raises(ValueError, match='max_per_image'):
        build(stuff=0, test_cfg=dict(panoptic_on=False, instance_on=True, max_per_image=100))
    with pytest.raises(KeyError, match='gt_sem_seg'):
        sample = data_sample()
        del sample.gt_sem_seg
        build().targets(sample, (64, 64))


# ---------------------------------------------------------------------------------------------
# Post-processing on hand-built logits.

def logit(p):
    p = torch.as_tensor(p, dtype=torch.float32)
    return torch.log(p / (1 - p))


def class_logits(label, score, num_logits):
    """Logits whose softmax has ``score`` at ``label`` and the rest spread evenly."""
    probs = torch.full((num_logits, ), (1 - score) / (num_logits - 1))
    probs[label] = score
    return probs.log()


def predict_with_stub(model, monkeypatch, mask_logits, cls_logits, ori_shape=None):
    """Run predict with the core replaced by fixed full-resolution logits."""
    monkeypatch.setattr(model.eomt, 'forward', lambda x: ([mask_logits], [cls_logits]))
    h, w = mask_logits.shape[-2:]
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=ori_shape or (h, w),
                                         batch_input_shape=(h, w)))
    model.eval()
    with torch.no_grad():
        return model.predict(torch.zeros(1, 3, h, w), [sample])[0]


def test_panoptic_postprocessing_rules(monkeypatch):
    model = build()
    void = THINGS + STUFF
    C1 = void + 1
    p = torch.full((9, 8, 8), 0.01)  # sigmoid of the mask logits, per query
    labels_scores = []
    # q0: thing 0 on rows 0-1.
    p[0, 0:2] = 0.9
    labels_scores.append((0, 0.95))
    # q1, q2: stuff class 2 on rows 2-3 and row 4 -> merged into one segment.
    p[1, 2:4] = 0.9
    labels_scores.append((2, 0.95))
    p[2, 4] = 0.9
    labels_scores.append((2, 0.95))
    # q3: thing 1, sigmoid >= 0.5 on row 5 and row 7 cols 0-3 (12 px); q4 wins row 7, but q3
    # wins row 6 cols 0-3 with sigmoid 0.3.  Argmax area / area >= 0.5 = 12 / 12 -> kept (the
    # authors' rule; Mask2Former's (argmax & >= 0.5) / area = 8 / 12 would drop it), and only
    # its pixels with sigmoid >= 0.5 are written (filter_low_score).
    p[3, 5] = 0.9
    p[3, 7, 0:4] = 0.9
    p[3, 6, 0:4] = 0.3
    labels_scores.append((1, 0.95))
    # q4: thing 1 on row 7.
    p[4, 7] = 0.95
    labels_scores.append((1, 0.95))
    # q5: thing 0, sigmoid >= 0.5 on rows 0-1 and row 6 cols 4-7 (20 px), wins only the
    # latter: 4 / 20 < 0.8 -> dropped, its pixels stay void.
    p[5, 0:2] = 0.85
    p[5, 6, 4:8] = 0.9
    labels_scores.append((0, 0.85))
    # q6, q7: score 0.79 and exactly 0.8 (not > 0.8) -> not kept although they would win
    # row 6 cols 4-7 (0.79 * 0.999 > 0.85 * 0.9).
    p[6, 6, 4:8] = 0.999
    labels_scores.append((0, 0.79))
    p[7, 6, 4:8] = 0.999
    labels_scores.append((0, 0.8))
    # q8: "no object" wins its softmax -> not kept although it would win row 7.
    p[8, 7] = 0.999
    labels_scores.append((void, 0.99))

    cls = torch.stack([class_logits(label, score, C1) for label, score in labels_scores])
    assert cls.softmax(-1)[7].max() == 0.8  # the boundary case really is 0.8
    result = predict_with_stub(model, monkeypatch, logit(p)[None], cls[None])
    pan = result.pred_panoptic_seg.sem_seg[0]

    expected = torch.full((8, 8), void, dtype=torch.int32)
    expected[0:2] = 0 + 1 * INSTANCE_OFFSET
    expected[2:5] = 2  # stuff: class id, one merged segment
    expected[5] = 1 + 2 * INSTANCE_OFFSET
    expected[7] = 1 + 3 * INSTANCE_OFFSET
    assert torch.equal(pan, expected), pan


def test_panoptic_nothing_kept_is_all_void(monkeypatch):
    model = build()
    cls = torch.stack([class_logits(0, 0.5, 5)] * QUERIES)[None]
    result = predict_with_stub(model, monkeypatch, torch.zeros(1, QUERIES, 4, 4), cls)
    assert (result.pred_panoptic_seg.sem_seg == THINGS + STUFF).all()


def test_predict_unpads_and_rescales(monkeypatch):
    model = build()
    # Stride-4 logits of a 16x16 padded input whose image is the top 8 rows: thing 0 there.
    mask = torch.full((1, QUERIES, 4, 4), -10.0)
    mask[0, 0, :2] = 10.0
    cls = torch.stack([class_logits(0, 0.99, 5)] + [class_logits(4, 0.99, 5)] *
                      (QUERIES - 1))[None]
    monkeypatch.setattr(model.eomt, 'forward', lambda x: ([mask], [cls]))
    sample = DetDataSample(metainfo=dict(img_shape=(8, 16), ori_shape=(16, 32)))
    model.eval()
    with torch.no_grad():
        result = model.predict(torch.zeros(1, 3, 16, 16), [sample])[0]
    pan = result.pred_panoptic_seg.sem_seg[0]
    assert pan.shape == (16, 32)
    assert (pan == INSTANCE_OFFSET).all()  # the whole un-padded image is the one thing


def test_instance_postprocessing_top_k_and_scores(monkeypatch):
    model = build(stuff=0, test_cfg=dict(panoptic_on=False, instance_on=True, max_per_image=3))
    # Q x C = 10 x 2 scores; the top 3 pairs are (q0, 0) .7, (q1, 1) .6, (q2, 0) .5.
    probs = torch.full((QUERIES, 3), 0.0) + torch.tensor([0.04, 0.01, 0.95])
    probs[0] = torch.tensor([0.7, 0.2, 0.1])
    probs[1] = torch.tensor([0.1, 0.6, 0.3])
    probs[2] = torch.tensor([0.5, 0.45, 0.05])
    mask = torch.full((QUERIES, 4, 4), -1.0)
    mask[0, 0, :] = 2.0  # 4 px
    mask[2, 1, :2] = 0.5
    mask[2, 2, :2] = 3.0
    mask[2, 3, 0] = 0.0  # logit 0 is outside the mask (logit > 0)
    # q1 has an empty mask -> mask score 0.
    result = predict_with_stub(model, monkeypatch, mask[None], probs.log()[None])
    ins = result.pred_instances
    order = ins.scores.argsort(descending=True)
    s = torch.sigmoid
    expected_scores = torch.stack([0.7 * s(torch.tensor(2.0)),
                                   0.5 * (2 * s(torch.tensor(0.5)) + 2 * s(torch.tensor(3.0))) / 4,
                                   torch.tensor(0.0)])
    torch.testing.assert_close(ins.scores[order], expected_scores, atol=1e-5, rtol=1e-5)
    assert ins.labels[order].tolist() == [0, 0, 1]
    assert ins.masks[order][0].sum() == 4 and ins.masks[order][0][0].all()
    assert ins.masks[order][1].sum() == 4 and not ins.masks[order][1][3, 0]
    assert not ins.masks[order][2].any()
