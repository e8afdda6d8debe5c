"""EoMTLoss: Hungarian matching + mask-classification loss over all prediction sets (EOMT.md §2).

The hand-computed cases use spatially constant mask logits and targets, and sample points only
in the interior of the maps (``torch.rand`` is patched), where bilinear sampling of a constant
map is exact; the loss is then a closed-form function of the logits.
"""
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from mmeomt.models import EoMTLoss
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
    target = mock.patch('mmdet.models.dense_heads.mask2former_head.reduce_mean')
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
