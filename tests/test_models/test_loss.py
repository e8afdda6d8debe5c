"""EoMTLoss: Hungarian matching + mask-classification loss over all prediction sets.

The method is docs/method.md §2.  The hand-computed cases use spatially constant mask logits and
targets, and sample points only in the interior of the maps (``torch.rand`` is patched), where
bilinear sampling of a constant map is exact; the loss is then a closed-form function of the
logits.  EoMTLoss is also compared with the per-image implementation it replaced
(``PerImageEoMTLoss``: mmdet's ``Mask2FormerHead`` functions, image by image): from the same
generator state it draws the same random numbers and gives the same matching, and the same losses
and gradients up to float rounding, also at the published size.
"""
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.utils import get_uncertain_point_coords_with_randomness
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from mmeomt.models import EoMTLoss
from mmeomt.models.losses.eomt_loss import importance_points
from mmeomt.models.losses.per_image_loss import PerImageEoMTLoss
from mmeomt.registry import MODELS

NUM_POINTS = 64


def interior_rand(*size, **kwargs):
    """``torch.rand`` restricted to [0.25, 0.75): points away from the maps' zero padding."""
    return 0.25 + 0.5 * REAL_RAND(*size, **kwargs)


REAL_RAND = torch.rand


def close(actual, expected):
    # mmdet's mask losses come out with shape (1,) (their normaliser is a 1-element tensor).
    torch.testing.assert_close(actual.reshape(()), expected.reshape(()))


def gt(labels, masks):
    return InstanceData(labels=torch.tensor(labels, dtype=torch.long), masks=masks)


def no_gt(size=16):
    return gt([], torch.zeros(0, size, size, dtype=torch.bool))


@pytest.fixture
def criterion():
    return EoMTLoss(num_classes=2, num_points=NUM_POINTS)


# One image, Q = 3, C = 2; one target of class 0 covering the whole image.
MASK_LOGITS = torch.tensor([4.0, -3.0, 0.0])  # per query, constant over the map
CLASS_PROBS = torch.tensor([[0.8, 0.1, 0.1],  # query 0: class 0 -> the obvious match
                            [0.1, 0.1, 0.8],
                            [0.3, 0.6, 0.1]])


def predictions(batch_size=1):
    mask_logits = MASK_LOGITS[None, :, None, None].expand(batch_size, 3, 8, 8).clone()
    class_logits = CLASS_PROBS.log()[None].expand(batch_size, 3, 3).clone()
    return mask_logits, class_logits


def one_target():
    return gt([0], torch.ones(1, 16, 16, dtype=torch.bool))


def hand_losses():
    """EoMT's formula for the case above: query 0 matched, queries 1 and 2 "no object"."""
    log_p = CLASS_PROBS.log().log_softmax(-1)
    ce = -torch.stack([log_p[0, 0], log_p[1, 2], log_p[2, 2]])
    weights = torch.tensor([1.0, 0.1, 0.1])
    loss_cls = 2.0 * (weights * ce).sum() / weights.sum()
    loss_mask = 5.0 * F.softplus(-MASK_LOGITS[0])  # BCE(logit 4, target 1), mean over points
    s = torch.sigmoid(MASK_LOGITS[0])
    loss_dice = 5.0 * (1 - (2 * s * NUM_POINTS + 1) / (s * NUM_POINTS + NUM_POINTS + 1))
    return dict(loss_cls=loss_cls, loss_mask=loss_mask, loss_dice=loss_dice), ce, weights


def test_matches_hand_computation(criterion):
    mask_logits, class_logits = predictions()
    with mock.patch.object(torch, 'rand', interior_rand):
        losses = criterion.loss([mask_logits] * 2, [class_logits] * 2, [one_target()], [{}])
    expected, _, _ = hand_losses()
    for name, value in expected.items():
        close(losses[name], value)
        # The intermediate prediction set is supervised the same way.
        close(losses[f'd0.{name}'], value)


def test_mask_losses_are_normalised_by_number_of_target_masks(criterion):
    # An image without targets adds nothing to the normaliser (mmdet's own get_targets would
    # count it as 1): the mask losses equal those of the target image alone.
    mask_logits, class_logits = predictions(batch_size=2)
    with mock.patch.object(torch, 'rand', interior_rand):
        losses = criterion.loss([mask_logits], [class_logits], [one_target(), no_gt()],
                                [{}, {}])
    expected, ce, weights = hand_losses()
    close(losses['loss_mask'], expected['loss_mask'])
    close(losses['loss_dice'], expected['loss_dice'])
    # CE: a weighted mean over all 6 queries; the empty image's queries are all "no object".
    log_p = CLASS_PROBS.log().log_softmax(-1)
    ce_empty = -log_p[:, 2]
    expected_cls = 2.0 * ((weights * ce).sum() + 0.1 * ce_empty.sum()) / (weights.sum() + 0.3)
    close(losses['loss_cls'], expected_cls)


def test_normaliser_is_averaged_over_ranks_and_clamped(criterion):
    mask_logits, class_logits = predictions()
    expected, _, _ = hand_losses()
    target = mock.patch('mmeomt.models.losses.eomt_loss.reduce_mean')
    with mock.patch.object(torch, 'rand', interior_rand), target as reduce_mean:
        # Another rank with 3 target masks: mean (1 + 3) / 2 = 2.
        reduce_mean.side_effect = lambda t: (t + 3) / 2
        losses = criterion.loss([mask_logits], [class_logits], [one_target()], [{}])
        close(losses['loss_mask'], expected['loss_mask'] / 2)
        close(losses['loss_dice'], expected['loss_dice'] / 2)
        # Another rank without targets: mean 0.5, clamped to 1.
        reduce_mean.side_effect = lambda t: t / 2
        losses = criterion.loss([mask_logits], [class_logits], [one_target()], [{}])
        close(losses['loss_mask'], expected['loss_mask'])


def test_images_without_targets_train_all_queries_as_no_object(criterion):
    mask_logits, class_logits = predictions(batch_size=2)
    mask_logits.requires_grad_(True)
    class_logits.requires_grad_(True)
    losses = criterion.loss([mask_logits], [class_logits], [no_gt(), no_gt()], [{}, {}])
    assert losses['loss_mask'] == 0 and losses['loss_dice'] == 0
    # All weights are 0.1, so the weighted mean is the plain mean of CE to "no object".
    expected = 2.0 * -CLASS_PROBS.log().log_softmax(-1)[:, 2].mean()
    close(losses['loss_cls'], expected)
    sum(losses.values()).backward()
    assert torch.isfinite(class_logits.grad).all() and class_logits.grad.abs().sum() > 0
    assert mask_logits.grad is None or not mask_logits.grad.any()


def test_keys_and_number_of_prediction_sets(criterion):
    torch.manual_seed(0)
    sets = 4  # L2 = 3 masked blocks + the final prediction
    mask_logits = [torch.randn(2, 5, 8, 8, requires_grad=True) for _ in range(sets)]
    class_logits = [torch.randn(2, 5, 3, requires_grad=True) for _ in range(sets)]
    targets = [gt([0, 1], torch.rand(2, 32, 32) > 0.5), no_gt(32)]
    losses = criterion.loss(mask_logits, class_logits, targets, [{}, {}])
    expected = {'loss_cls', 'loss_mask', 'loss_dice'}
    expected |= {f'd{i}.{name}' for i in range(sets - 1) for name in list(expected)}
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    # Every prediction set receives gradient (deep supervision, equal weights).
    assert all(m.grad.abs().sum() > 0 for m in mask_logits)
    assert all(c.grad.abs().sum() > 0 for c in class_logits)


def test_perfect_predictions_score_lower_than_random(criterion):
    torch.manual_seed(0)
    # Two targets as 8x8 blocks at stride 4 of a 32x32 image.
    coarse = torch.zeros(2, 8, 8, dtype=torch.bool)
    coarse[0, :4, :4] = True
    coarse[1, 4:, 2:] = True
    masks = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    targets = [gt([1, 0], masks)]
    perfect_masks = torch.full((1, 5, 8, 8), -20.0)
    perfect_masks[0, :2] = torch.where(coarse, 20.0, -20.0)
    perfect_classes = torch.full((1, 5, 3), -20.0)
    perfect_classes[0, 0, 1] = perfect_classes[0, 1, 0] = 20.0
    perfect_classes[0, 2:, 2] = 20.0
    perfect = criterion.loss([perfect_masks], [perfect_classes], targets, [{}])
    random = criterion.loss([torch.randn(1, 5, 8, 8)], [torch.randn(1, 5, 3)], targets, [{}])
    for name in ('loss_cls', 'loss_mask', 'loss_dice'):
        assert perfect[name] < random[name], name
    assert sum(perfect.values()) < sum(random.values()) / 3
    # Importance sampling puts most points on the mask borders, where the bilinearly sampled
    # stride-4 logits blur; away from those, perfect predictions cost (almost) nothing.
    assert perfect['loss_cls'] < 1e-6


@pytest.mark.parametrize('scope', [None, 'mmdet', 'mmseg'])
def test_defaults_build_in_every_scope(scope):
    if scope is not None:
        init_default_scope(scope)
    criterion = MODELS.build(dict(type='mmeomt.EoMTLoss', num_classes=3))
    assert criterion.class_weight == [1.0, 1.0, 1.0, 0.1]
    assert criterion.num_points == 12544
    assert (criterion.oversample_ratio, criterion.importance_sample_ratio) == (3.0, 0.75)
    costs = criterion.assigner.match_costs
    assert [type(c).__name__ for c in costs] == [
        'ClassificationCost', 'CrossEntropyLossCost', 'DiceCost']
    assert [c.weight for c in costs] == [2.0, 5.0, 5.0]
    assert costs[1].use_sigmoid and costs[2].pred_act and costs[2].eps == 1.0
    assert criterion.loss_cls.loss_weight == 2.0 and not criterion.loss_cls.use_sigmoid
    assert criterion.loss_mask.loss_weight == 5.0 and criterion.loss_mask.use_sigmoid
    assert criterion.loss_dice.loss_weight == 5.0 and criterion.loss_dice.naive_dice
    assert math.isclose(criterion.loss_dice.eps, 1.0)
    # A loss has no parameters or buffers: nothing of it goes into checkpoints.
    assert not criterion.state_dict()


def test_bad_input_is_named(criterion):
    mask_logits, class_logits = predictions()
    with pytest.raises(TypeError, match='labels must be a long'):
        criterion.loss([mask_logits], [class_logits],
                       [InstanceData(labels=torch.tensor([0.0]), masks=torch.ones(1, 4, 4))],
                       [{}])
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 2\)'):
        criterion.loss([mask_logits], [class_logits], [gt([2], torch.ones(1, 4, 4))], [{}])
    with pytest.raises(TypeError, match='masks must be a tensor'):
        criterion.loss([mask_logits], [class_logits], [gt([0], torch.ones(1, 4, 4).numpy())],
                       [{}])
    with pytest.raises(ValueError, match='class logits have 3 entries'):
        EoMTLoss(num_classes=3).loss([mask_logits], [class_logits], [one_target()], [{}])
    with pytest.raises(ValueError, match='class_weight needs num_classes'):
        EoMTLoss(num_classes=2, loss_cls=dict(type='mmdet.CrossEntropyLoss',
                                              class_weight=[1.0, 0.1]))


# Equivalence with the per-image implementation.  Q = 6 queries, C = 4 classes, 50 points unless
# given; `num_gts` per image, with images without targets and with more targets than queries.
SQUARED_DICE_ON_LOGITS = dict(type='mmdet.HungarianAssigner', match_costs=[
    dict(type='mmdet.ClassificationCost', weight=1.0),
    dict(type='mmdet.CrossEntropyLossCost', weight=2.0, use_sigmoid=True),
    dict(type='mmdet.DiceCost', weight=3.0, pred_act=False, naive_dice=False, eps=0.5),
])
EQUIVALENCE_CASES = {
    '3 images, 3 sets, empty + more targets than queries': dict(num_gts=(3, 0, 8), sets=3),
    'one image, one set': dict(num_gts=(2, ), sets=1),
    'no targets in the batch': dict(num_gts=(0, 0), sets=2),
    'importance sampling only, 2x oversampling': dict(
        num_gts=(1, 4), sets=2, loss=dict(importance_sample_ratio=1.0, oversample_ratio=2.0)),
    'points not filling the map': dict(num_gts=(5, 1, 2, 6), sets=4, loss=dict(num_points=7)),
    "the demo's sizes": dict(num_gts=(11, 9, 0, 12, 20, 25, 3, 7), sets=3, queries=20,
                             size=(128, 128), loss=dict(num_points=512)),
    'other match costs: squared dice of the logits': dict(
        num_gts=(4, 7), sets=2, loss=dict(assigner=SQUARED_DICE_ON_LOGITS)),
}


def random_inputs(num_gts, sets, seed=0, queries=6, classes=4, size=(32, 24)):
    """Mask logits ``(B, Q, H/4, W/4)`` and class logits per set, and random targets."""
    g = torch.Generator().manual_seed(seed)
    batch = len(num_gts)
    mask_logits = [3 * torch.randn(batch, queries, size[0] // 4, size[1] // 4, generator=g)
                   for _ in range(sets)]
    class_logits = [torch.randn(batch, queries, classes + 1, generator=g) for _ in range(sets)]
    targets = [gt(torch.randint(0, classes, (n, ), generator=g).tolist(),
                  torch.rand(n, *size, generator=g) > 0.6) for n in num_gts]
    return mask_logits, class_logits, targets


def recorded(obj, name, results):
    """Patch ``obj.name`` to also append its return values to ``results``."""
    original = getattr(obj, name)

    def record(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    return mock.patch.object(obj, name, record)


def run(criterion, mask_logits, class_logits, targets, seed=0):
    """Losses, logit gradients, the generator state afterwards and the matching.

    The matching is a list of ``(set, image, query, target)``, the target numbered over the
    batch (image after image); the per-image implementation's comes from the ``AssignResult``
    of each of its assigner calls (set by set, image by image).
    """
    mask_logits = [m.clone().requires_grad_(True) for m in mask_logits]
    class_logits = [c.clone().requires_grad_(True) for c in class_logits]
    results = []
    per_image = isinstance(criterion, PerImageEoMTLoss)
    spy = recorded(criterion.assigner if per_image else criterion,
                   'assign' if per_image else 'match', results)
    torch.manual_seed(seed)
    with spy:
        losses = criterion.loss(mask_logits, class_logits, targets, [{}] * len(targets))
    rng_state = torch.get_rng_state()
    sum(losses.values()).sum().backward()
    grads = [t.grad if t.grad is not None else torch.zeros_like(t)
             for t in mask_logits + class_logits]
    if per_image:
        first = [sum(len(t) for t in targets[:i]) for i in range(len(targets))]
        matching = []
        for k, assign_result in enumerate(results):
            image = k % len(targets)
            queries = torch.nonzero(assign_result.gt_inds > 0)[:, 0].tolist()
            matching += [(k // len(targets), image, q,
                          first[image] + int(assign_result.gt_inds[q]) - 1) for q in queries]
    else:
        matching = list(zip(*[column.tolist() for column in results[0]]))
    return losses, grads, rng_state, matching


def assert_equals_per_image(num_gts, sets, queries=6, classes=4, size=(32, 24), loss=None):
    inputs = random_inputs(num_gts, sets, queries=queries, classes=classes, size=size)
    loss_cfg = {'num_classes': classes, 'num_points': 50, **(loss or {})}
    new_losses, new_grads, new_state, new_matching = run(EoMTLoss(**loss_cfg), *inputs)
    old_losses, old_grads, old_state, old_matching = run(PerImageEoMTLoss(**loss_cfg), *inputs)

    assert new_matching == old_matching
    if sum(num_gts):
        # Every image with targets is matched in every set: min(N_i, Q) queries each.
        assert len(new_matching) == sets * sum(min(n, queries) for n in num_gts)
    # The same random numbers were drawn, and no more: training continues identically.
    assert torch.equal(new_state, old_state)
    assert list(new_losses) == list(old_losses)  # same keys, same (logging) order
    for name, value in new_losses.items():
        # The mask losses average the same terms in another order (the importance-sampled
        # points come out of topk unsorted): float32 rounding of a mean of up to 5e5 terms (the
        # published size), 1-2 ulps (<= 2e-7 relative) in practice.
        torch.testing.assert_close(value.reshape(()), old_losses[name].reshape(()), rtol=1e-6,
                                   atol=1e-6, msg=name)
    for new, old in zip(new_grads, old_grads):
        torch.testing.assert_close(new, old, rtol=0, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in new_grads)


@pytest.mark.parametrize('case', EQUIVALENCE_CASES.values(), ids=EQUIVALENCE_CASES.keys())
def test_equals_the_per_image_implementation(case):
    assert_equals_per_image(**case)


def test_equals_the_per_image_implementation_at_the_published_size():
    # EoMT-S 640 (docs/method.md §2): 3 masked blocks + the final prediction, 2 images of
    # 640 x 640 with 20 targets each, 200 queries, 133 classes, 12544 points.  ~4 s on the CPU,
    # most of it in the per-image implementation.
    assert_equals_per_image((20, 20), sets=4, queries=200, classes=133, size=(640, 640),
                            loss=dict(num_points=12544))


@pytest.mark.parametrize('ties', [False, True], ids=['distinct logits', 'tied logits'])
def test_importance_points_are_mmdets_in_another_order(ties):
    # mmdet's get_uncertain_point_coords_with_randomness keeps the 48 of 192 candidates with the
    # smallest |logit| (sorted) and appends 16 uniform points; EoMTLoss keeps the same ones
    # (topk unsorted), in another order, even where all candidates tie (zero maps).
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(5, 1, 8, 8, generator=g)
    if ties:
        logits[::2] = 0
    torch.manual_seed(0)
    expected = get_uncertain_point_coords_with_randomness(logits, None, 64, 3.0, 0.75)
    torch.manual_seed(0)
    candidates, uniform = torch.rand(5, 192, 2), torch.rand(5, 16, 2)
    actual, = importance_points([logits], [candidates], [uniform], num_uncertain=48)
    for row, expected_row in zip(actual, expected):
        assert set(map(tuple, row[:48].tolist())) == set(map(tuple, expected_row[:48].tolist()))
    assert torch.equal(actual[:, 48:], expected[:, 48:])


def test_amp_logits_are_matched_and_scored_in_float32():
    mask_logits, class_logits, targets = random_inputs((3, 2), sets=2)
    criterion = EoMTLoss(num_classes=4, num_points=50)
    half = run(criterion, [m.bfloat16() for m in mask_logits],
               [c.bfloat16() for c in class_logits], targets)
    full = run(criterion, [m.bfloat16().float() for m in mask_logits],
               [c.bfloat16().float() for c in class_logits], targets)
    assert half[3] == full[3]
    for name, value in half[0].items():
        assert value.dtype == torch.float32
        assert torch.equal(value, full[0][name]), name
    assert all(g.dtype == torch.bfloat16 for g in half[1])


def test_unbatchable_match_costs_and_mixed_mask_sizes_are_refused():
    with pytest.raises(ValueError, match='HungarianAssigner with ClassificationCost'):
        EoMTLoss(num_classes=2, assigner=dict(
            type='mmdet.HungarianAssigner',
            match_costs=[dict(type='mmdet.FocalLossCost', weight=2.0)]))
    mask_logits, class_logits = predictions(batch_size=2)
    with pytest.raises(ValueError, match='share their size'):
        EoMTLoss(num_classes=2).loss([mask_logits], [class_logits],
                                     [one_target(), no_gt(size=8)], [{}, {}])
