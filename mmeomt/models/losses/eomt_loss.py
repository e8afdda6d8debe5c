"""EoMT's training objective: Mask2Former's matching + mask-classification loss.

The method is docs/method.md §2.

Per image and per prediction set, queries are matched one-to-one to target masks by the
Hungarian algorithm on ``2 * class + 5 * BCE + 5 * dice`` (mask costs on 12544 uniformly sampled
points); the loss is ``2 * CE`` over ``C + 1`` classes (no-object weight 0.1) plus ``5 * BCE`` and
``5 * dice`` on 12544 importance-sampled points of the matched masks, normalised by the number of
target masks (mean over ranks, at least 1).  Every one of the ``L2 + 1`` prediction sets is
supervised with the same weight; mmengine sums the returned ``loss_*`` entries.

The maths is that of mmdet 3.3's ``Mask2FormerHead`` loss, with mmdet's match costs, point
sampling and loss modules; what :class:`EoMTLoss` changes is how the work is arranged: fewer
and cheaper passes over the sampled points than mmdet's image-by-image functions (see the class
docstring).
:class:`~mmeomt.models.losses.per_image_loss.PerImageEoMTLoss` keeps the per-image
implementation as the reference it is tested against.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.ops import point_sample
from mmdet.models.task_modules.assigners import (ClassificationCost, CrossEntropyLossCost,
                                                 DiceCost, HungarianAssigner)
from mmdet.registry import TASK_UTILS
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from mmeomt.registry import MODELS

# mmdet types are written with their scope so they resolve from mmseg's default scope too.
DEFAULT_ASSIGNER = dict(
    type='mmdet.HungarianAssigner',
    match_costs=[
        dict(type='mmdet.ClassificationCost', weight=2.0),
        dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
        dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0),
    ])
DEFAULT_LOSS_MASK = dict(
    type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0)
DEFAULT_LOSS_DICE = dict(
    type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean', naive_dice=True,
    eps=1.0, loss_weight=5.0)
NO_OBJECT_WEIGHT = 0.1
MATCH_COSTS = (ClassificationCost, CrossEntropyLossCost, DiceCost)


def dice_cost(values: Tensor, targets: Tensor, cost: DiceCost) -> Tensor:
    """mmdet's ``DiceCost`` of ``(Q, P)`` values and ``(N, P)`` targets, ``(Q, N)``, unweighted.

    ``values`` are what the cost compares: probabilities if ``cost.pred_act``, else logits.
    """
    numerator = 2 * (values @ targets.T)
    if not cost.naive_dice:
        values, targets = values.square(), targets.square()
    return 1 - (numerator + cost.eps) / (values.sum(-1)[:, None] + targets.sum(-1) + cost.eps)


def match_cost(match_costs: Sequence, class_logits: Tensor, pred_points: Tensor,
               gt_labels: Tensor, gt_points: Tensor, scratch: Tensor) -> Tensor:
    """The weighted sum of mmdet's match costs of one image, ``(Q, N)``.

    The function of mmdet's cost modules, rearranged to pass over the ``(Q, P)`` point logits
    fewer times; the numbers equal mmdet's up to float rounding.

    Args:
        match_costs: ``ClassificationCost``, ``CrossEntropyLossCost(use_sigmoid=True)`` and/or
            ``DiceCost`` modules (weights and options are read from them).
        class_logits: ``(Q, C + 1)``.
        pred_points: mask logits at the sampled points, ``(Q, P)``; overwritten.
        gt_labels: ``(N,)`` long.
        gt_points: target masks at the same points, ``(N, P)`` in ``[0, 1]``.
        scratch: ``(Q, P)`` float, overwritten.
    """
    costs = {}
    for k, cost in enumerate(match_costs):  # the costs of the logits as they are ...
        if isinstance(cost, ClassificationCost):
            costs[k] = -class_logits.softmax(-1)[:, gt_labels]
        elif isinstance(cost, DiceCost) and not cost.pred_act:
            costs[k] = dice_cost(pred_points, gt_points, cost)
        elif isinstance(cost, CrossEntropyLossCost):
            # mmdet's mean_p [t softplus(-x) + (1 - t) softplus(x)] is, as softplus(x) -
            # softplus(-x) = x, mean_p [softplus(x) - t x]: one product instead of two and one
            # softplus, added below.
            costs[k] = -(pred_points @ gt_points.T)
    # ... then in the given buffers: (Q, P) tensors are the matching's largest, and fresh ones
    # cost page faults on the CPU.  Logits below -80 are raised to it, so that their sigmoid
    # stays a normal float with a finite log (sigmoid and softplus change by < 2e-35).
    clamped = pred_points.clamp_(min=-80)
    probs = torch.sigmoid(clamped, out=scratch)
    for k, cost in enumerate(match_costs):
        if isinstance(cost, DiceCost) and cost.pred_act:
            costs[k] = dice_cost(probs, gt_points, cost)
    if any(isinstance(cost, CrossEntropyLossCost) for cost in match_costs):
        # softplus(x) = x - log(sigmoid(x)): torch's softplus and log-sigmoid are ~30x slower
        # than sigmoid + log on the CPU.
        softplus_sum = clamped.sub_(probs.log_()).sum(-1)[:, None]
        for k, cost in enumerate(match_costs):
            if isinstance(cost, CrossEntropyLossCost):
                costs[k] = (costs[k] + softplus_sum) / pred_points.shape[-1]
    return sum(costs[k] * cost.weight for k, cost in enumerate(match_costs))


def sample_maps(maps: Tensor, points: Tensor) -> Tensor:
    """``(N, P)``: ``N`` maps ``(N, h, w)`` at the same ``(P, 2)`` points in ``[0, 1]^2``.

    ``mmcv.ops.point_sample`` of ``maps[:, None]`` at ``points`` repeated ``N`` times, with the
    same numbers.
    """
    # One map per batch entry: grid_sample then reads one map at a time (with the maps as
    # channels it visits all of them at every point, ~20 MB for EoMT-S 640's queries, and misses
    # the cache: ~2x slower on the CPU); the grid is shared, expanded without a copy.
    grid = (2 * points - 1)[None, :, None].expand(len(maps), -1, -1, -1)
    return F.grid_sample(maps[:, None], grid, align_corners=False).view(len(maps), len(points))


def importance_points(mask_logits: Sequence[Tensor], candidates: Sequence[Tensor],
                      uniform: Sequence[Tensor], num_uncertain: int) -> List[Tensor]:
    """Per set, point coordinates ``(M, num_uncertain + U, 2)`` for the mask losses.

    mmdet's ``get_uncertain_point_coords_with_randomness``, with its random numbers passed in:
    it draws them itself, and the caller draws them in the per-image implementation's order.

    Args:
        mask_logits: per set ``(M, 1, h, w)``.
        candidates: per set ``(M, K, 2)`` uniform points; the ``num_uncertain`` with the
            smallest ``|logit|`` are kept ...
        uniform: per set ``(M, U, 2)`` ... followed by these.
        num_uncertain: how many candidates to keep.
    """
    # point_sample's grid, 2 * points - 1, in one buffer for all sets: (M, K, 2) tensors are the
    # loss's largest after the matching's, and fresh ones cost page faults on the CPU.
    grid = torch.empty_like(candidates[0])
    points = []
    for logits, set_candidates, set_uniform in zip(mask_logits, candidates, uniform):
        torch.mul(set_candidates, 2, out=grid).sub_(1)
        sampled = F.grid_sample(logits, grid[:, :, None], align_corners=False)[:, 0, :, 0]
        # -|logit| (mmdet's get_uncertainty), in place.
        index = sampled.abs_().neg_().topk(num_uncertain, dim=1, sorted=False).indices
        # Each (x, y) pair gathered as one complex number: a 2D gather, ~2x faster on the CPU
        # than gathering the pairs with an expanded (M, num_uncertain, 2) index.
        uncertain = torch.view_as_complex(set_candidates).gather(1, index)
        points.append(torch.cat([torch.view_as_real(uncertain), set_uniform], dim=1))
    return points


def sample_targets(gt_masks: Tensor, gts: Sequence[Tensor], points: Sequence[Tensor]) -> Tensor:
    """``(S, M, P)``: for each matched query of each set, its target mask at its points.

    Each target is matched at most once per set, so each target mask is sampled in place, at
    the points of the queries matched to it in all sets, rather than copied per match: one call
    reads the (large) masks once.

    Args:
        gt_masks: ``(T, H, W)`` float.
        gts: per set ``(M,)``, the target (a row of ``gt_masks``) of each query ...
        points: ... and its points ``(M, P, 2)``.
    """
    grid = points[0].new_zeros(len(gt_masks), len(points), *points[0].shape[1:])
    for s, (set_gts, set_points) in enumerate(zip(gts, points)):
        grid[set_gts, s] = 2 * set_points - 1  # point_sample's grid, on the rows in use only
    sampled = F.grid_sample(gt_masks[:, None], grid.flatten(1, 2)[:, :, None],
                            align_corners=False).view(grid.shape[:3])
    return torch.stack([sampled[set_gts, s] for s, set_gts in enumerate(gts)])


@MODELS.register_module()
class EoMTLoss(BaseModule):
    """Hungarian matching and mask-classification loss over all prediction sets.

    Notation: ``S`` prediction sets (``L2 + 1``), ``B`` images, ``Q`` queries, ``N_i`` target
    masks of image ``i`` (``T`` in the batch, at most ``N`` in an image), ``P = num_points``,
    ``M`` matched queries per prediction set (``sum_i min(N_i, Q)``, the same for every set).

    The steps of mmdet's ``Mask2FormerHead`` loss:

    1. random points: per set, ``P`` uniform points per image for the matching, then
       ``oversample_ratio * P`` candidate and ``(1 - importance_sample_ratio) * P`` uniform
       points per matched query -- drawn in this order, which is the per-image
       implementation's, so a seeded run draws the same numbers;
    2. matching: per image, the targets are sampled at the image's points of every set in one
       call; per set and image, all ``Q`` masks at the same points (:func:`sample_maps`) and
       the ``(Q, N_i)`` costs (:func:`match_cost`); the Hungarian solves run on the CPU with
       scipy's ``linear_sum_assignment``, as in mmdet's ``HungarianAssigner``;
    3. losses: per set, the importance-sampled points of the ``M`` matched masks
       (:func:`importance_points`) and the logits there; the targets at the points of all sets
       in one call (:func:`sample_targets`); mmdet's loss modules then reduce each set.

    The matching and losses are those of the per-image implementation
    (``tests/test_models/test_loss.py`` checks indices, values and gradients).  The costs agree
    up to float rounding, so only a near-tie between two matchings could resolve differently;
    the losses agree up to float rounding too: they average over the same points, in another
    order.

    Checked against the authors' loss (a subclass of transformers' ``Mask2FormerLoss``):
    softmax class cost, pairwise sigmoid BCE mean over points, dice ``1 - (2a + 1)/(b + c + 1)``,
    the same uniform points for predictions and targets (``grid_sample``,
    ``align_corners=False``), importance sampling with uncertainty ``-|logit|`` over
    ``3 * num_points`` candidates, weighted-mean CE (sum of weights as denominator), BCE
    "mean over points, sum over masks" and dice "sum over masks", both divided by the number of
    target masks.  Differences:

    * mmdet normalises the mask losses by ``sum_i max(num_matched_i, 1)``; EoMT by the number of
      target masks.  They differ for images without targets (and with more targets than
      queries).
    * The authors' matcher clamps the cost matrix to +-1e10 and zeroes NaNs; mmdet's does not
      (scipy then raises on a diverged model instead of matching arbitrarily), nor does this one.
    * Logits are cast to float32 here, so under AMP the matching and losses run in full
      precision.

    Args:
        num_classes: ``C`` (things + stuff); class logits have ``C + 1`` entries.
        num_points: points sampled per mask for the costs and the mask losses.
        oversample_ratio: importance sampling draws ``oversample_ratio * num_points``
            candidates (at least 1) ...
        importance_sample_ratio: ... and keeps this fraction of ``num_points`` as the most
            uncertain ones; the rest are uniform.
        assigner: an mmdet ``HungarianAssigner`` config whose match costs are
            ``ClassificationCost``, sigmoid ``CrossEntropyLossCost`` and/or ``DiceCost`` (their
            formulas are batched here); ``None`` = class 2.0, BCE 5.0, dice 5.0.
        loss_cls: mmdet ``CrossEntropyLoss`` config; ``None`` = weight 2.0 with
            ``class_weight = [1] * C + [0.1]``.  A config without ``class_weight`` gets that one.
        loss_mask: ``None`` = sigmoid ``CrossEntropyLoss``, weight 5.0.
        loss_dice: ``None`` = naive ``DiceLoss``, eps 1.0, weight 5.0.
        init_cfg: unused (no parameters); kept for the mmengine interface.
    """

    def __init__(self,
                 num_classes: int,
                 num_points: int = 12544,
                 oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75,
                 assigner: Optional[dict] = None,
                 loss_cls: Optional[dict] = None,
                 loss_mask: Optional[dict] = None,
                 loss_dice: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'EoMTLoss: num_classes must be a positive int, got {num_classes!r}')
        if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
            raise ValueError('EoMTLoss: needs oversample_ratio >= 1 and importance_sample_ratio '
                             f'in [0, 1], got {oversample_ratio} and {importance_sample_ratio}')
        self.num_classes = num_classes
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

        self.assigner = TASK_UTILS.build(DEFAULT_ASSIGNER if assigner is None else assigner)
        # Only these costs are implemented by match_cost; mmdet's softmax CrossEntropyLossCost
        # is not implemented either.
        supported = isinstance(self.assigner, HungarianAssigner) and all(
            type(c) in MATCH_COSTS and getattr(c, 'use_sigmoid', True)
            for c in self.assigner.match_costs)
        if not supported:
            raise ValueError(
                'EoMTLoss: assigner must be an mmdet HungarianAssigner with ClassificationCost, '
                'CrossEntropyLossCost(use_sigmoid=True) and/or DiceCost match costs, got '
                f'{assigner}')

        loss_cls = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, reduction='mean',
                        loss_weight=2.0) if loss_cls is None else dict(loss_cls)
        if loss_cls.get('class_weight') is None:
            loss_cls['class_weight'] = [1.0] * num_classes + [NO_OBJECT_WEIGHT]
        if len(loss_cls['class_weight']) != num_classes + 1:
            raise ValueError(
                f'EoMTLoss: loss_cls.class_weight needs num_classes + 1 = {num_classes + 1} '
                f'entries (the last for "no object"), got {len(loss_cls["class_weight"])}')
        self.class_weight = list(loss_cls['class_weight'])
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_mask = MODELS.build(DEFAULT_LOSS_MASK if loss_mask is None else loss_mask)
        self.loss_dice = MODELS.build(DEFAULT_LOSS_DICE if loss_dice is None else loss_dice)

    def loss(self, mask_logits_list: Sequence[Tensor], class_logits_list: Sequence[Tensor],
             batch_gt_instances: List[InstanceData],
             batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """Loss of every prediction set.

        Args:
            mask_logits_list: per prediction set ``(B, Q, h, w)`` at the core's mask
                resolution (``H/4, W/4`` at patch 16); the last is the final prediction.
            class_logits_list: per prediction set ``(B, Q, C + 1)``.
            batch_gt_instances: per image ``labels`` LongTensor ``(N,)`` in ``[0, C)`` and
                ``masks`` ``(N, H, W)`` (bool/uint8/float) covering the same area as the
                (padded) network input, so ``(H, W)`` is the same for all images; ``N`` may be 0.
            batch_img_metas: per image meta information (not used by the loss itself).

        Returns:
            ``loss_cls``, ``loss_mask``, ``loss_dice`` for the final prediction and
            ``d{i}.loss_cls`` etc. for the ``i``-th intermediate one (each weighted already).
        """
        if len(mask_logits_list) != len(class_logits_list) or not mask_logits_list:
            raise ValueError(
                'EoMTLoss: mask_logits_list and class_logits_list must be non-empty and of equal '
                f'length, got {len(mask_logits_list)} and {len(class_logits_list)}')
        batch_size, _, num_logits = class_logits_list[-1].shape
        if num_logits != self.num_classes + 1:
            raise ValueError(f'EoMTLoss: class logits have {num_logits} entries; num_classes = '
                             f'{self.num_classes} needs {self.num_classes + 1}')
        if len(batch_gt_instances) != batch_size or len(batch_img_metas) != batch_size:
            raise ValueError(
                f'EoMTLoss: {batch_size} images but {len(batch_gt_instances)} gt instances and '
                f'{len(batch_img_metas)} img metas')
        for i, gt_instances in enumerate(batch_gt_instances):
            self._check_targets(gt_instances, i)
        mask_sizes = {tuple(g.masks.shape[-2:]) for g in batch_gt_instances}
        if len(mask_sizes) > 1:
            raise ValueError(f'EoMTLoss: target masks of one batch must share their size (the '
                             f'padded input), got {sorted(mask_sizes)}')
        return self.loss_by_feat([c.float() for c in class_logits_list],
                                 [m.float() for m in mask_logits_list],
                                 batch_gt_instances, batch_img_metas)

    def loss_by_feat(self, class_logits_list: List[Tensor], mask_logits_list: List[Tensor],
                     batch_gt_instances: List[InstanceData],
                     batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """:meth:`loss` on checked float32 inputs (same arguments, same order as mmdet's)."""
        num_sets = len(class_logits_list)
        batch_size, num_queries = class_logits_list[0].shape[:2]
        device = class_logits_list[0].device
        num_gts = [len(g) for g in batch_gt_instances]
        # (T,) and (T, H, W): the T = sum(N_i) targets of all images, image after image.
        gt_labels = torch.cat([g.labels for g in batch_gt_instances])
        # Converted while copied: one pass over the (often int64) masks, one large tensor.
        gt_masks = batch_gt_instances[0].masks.new_empty(
            len(gt_labels), *batch_gt_instances[0].masks.shape[1:], dtype=torch.float)
        for rows, g in zip(gt_masks.split(num_gts), batch_gt_instances):
            rows.copy_(g.masks)
        num_matched = sum(min(n, num_queries) for n in num_gts)
        match_points, candidates, uniform = self._draw_points(num_sets, batch_size, num_matched,
                                                              device)
        sets, images, queries, gts = self.match(class_logits_list, mask_logits_list, gt_labels,
                                                gt_masks, num_gts, match_points)

        labels = gt_labels.new_full((num_sets, batch_size, num_queries), self.num_classes)
        labels[sets, images, queries] = gt_labels[gts]
        class_weight = class_logits_list[0].new_tensor(self.class_weight)
        # The number of target masks of the batch, averaged over ranks, at least 1.
        num_masks = reduce_mean(class_logits_list[0].new_tensor(float(sum(num_gts)))).clamp(min=1)
        if num_matched:
            set_gts = gts.split(num_matched)
            # Per set (M, 1, h, w): the matched masks, by image and query.
            matched = [mask_logits[i, q][:, None] for mask_logits, i, q in zip(
                mask_logits_list, images.split(num_matched), queries.split(num_matched))]
            num_uncertain = int(self.importance_sample_ratio * self.num_points)
            with torch.no_grad():
                points = importance_points(matched, candidates, uniform, num_uncertain)
                point_targets = sample_targets(gt_masks, set_gts, points)

        losses = []
        for s, (class_logits, mask_logits) in enumerate(zip(class_logits_list, mask_logits_list)):
            set_labels = labels[s].flatten()
            loss_cls = self.loss_cls(class_logits.flatten(0, 1), set_labels,
                                     avg_factor=class_weight[set_labels].sum())
            if num_matched:
                point_logits = point_sample(matched[s], points[s])[:, 0]  # (M, P)
                loss_dice = self.loss_dice(point_logits, point_targets[s], avg_factor=num_masks)
                loss_mask = self.loss_mask(point_logits.reshape(-1), point_targets[s].reshape(-1),
                                           avg_factor=num_masks * self.num_points)
            else:
                # No target in the batch: zero, but connected to the graph (as mmdet's), so that
                # every parameter receives a gradient (DDP).
                loss_mask = loss_dice = mask_logits.flatten()[:0].sum()
            losses.append(dict(loss_cls=loss_cls, loss_mask=loss_mask, loss_dice=loss_dice))

        # The final prediction's losses first, then d0 (the first masked block), d1, ...
        loss_dict = dict(losses[-1])
        for i, set_losses in enumerate(losses[:-1]):
            loss_dict.update({f'd{i}.{name}': value for name, value in set_losses.items()})
        return loss_dict

    def _draw_points(self, num_sets: int, batch_size: int, num_matched: int,
                     device: torch.device) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
        """All random points of one loss, in ``[0, 1]^2``.

        The per-image implementation's ``torch.rand`` calls, with the same shapes and in the same
        order (per set: each image's matching points, then the candidate and the uniform points
        of the matched masks), so the same generator state gives the same points.

        Returns:
            matching points ``(S, B, P, 2)``; per set, candidates ``(M, K, 2)`` and uniform
            points ``(M, U, 2)`` (empty lists when nothing is matched).
        """
        num_candidates = int(self.num_points * self.oversample_ratio)
        num_uniform = self.num_points - int(self.importance_sample_ratio * self.num_points)
        match_points, candidates, uniform = [], [], []
        for _ in range(num_sets):
            match_points.append(torch.cat([
                torch.rand((1, self.num_points, 2), device=device) for _ in range(batch_size)
            ]))
            if num_matched:
                candidates.append(torch.rand(num_matched, num_candidates, 2, device=device))
                uniform.append(torch.rand(num_matched, num_uniform, 2, device=device)
                               if num_uniform else torch.empty(num_matched, 0, 2, device=device))
        return torch.stack(match_points), candidates, uniform

    @torch.no_grad()
    def match(self, class_logits_list: List[Tensor], mask_logits_list: List[Tensor],
              gt_labels: Tensor, gt_masks: Tensor, num_gts: List[int],
              match_points: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Hungarian matching of every prediction set of every image.

        Args:
            class_logits_list: per set ``(B, Q, C + 1)``.
            mask_logits_list: per set ``(B, Q, h, w)``.
            gt_labels: ``(T,)`` long, the targets of all images, image after image ...
            gt_masks: ``(T, H, W)`` float, ... their masks ...
            num_gts: ... and how many ``N_i`` each image has.
            match_points: ``(S, B, P, 2)``, each image's points of each set.

        Returns:
            ``(sets, images, queries, gts)``, long ``(S * M,)`` each: query ``queries[k]`` of
            image ``images[k]`` in set ``sets[k]`` is matched to target ``gts[k]`` (a row of
            ``gt_masks``); ordered by set, image and query (the order of mmdet's positive
            queries).
        """
        num_sets = len(match_points)
        first = np.cumsum([0] + num_gts[:-1])
        images = [i for i, n in enumerate(num_gts) if n]
        labels, masks = gt_labels.split(num_gts), gt_masks.split(num_gts)
        # (N_i, S, P): the targets of an image at its points of every set, in one call.
        gt_points = {i: sample_maps(masks[i], match_points[:, i].flatten(0, 1)).view(
            num_gts[i], num_sets, -1) for i in images}
        pairs = [(s, i) for s in range(num_sets) for i in images]
        # One (Q, P) buffer for the sigmoids of all of them (see match_cost).
        scratch = match_points.new_empty(class_logits_list[0].shape[1], match_points.shape[2])
        costs = [match_cost(self.assigner.match_costs, class_logits_list[s][i],
                            sample_maps(mask_logits_list[s][i], match_points[s, i]), labels[i],
                            gt_points[i][:, s], scratch) for s, i in pairs]
        if not costs:
            return tuple(gt_labels.new_zeros(0) for _ in range(4))
        # All (Q, N_i) matrices in one copy to the host, for scipy.
        host = torch.cat([cost.flatten() for cost in costs]).cpu().split(
            [cost.numel() for cost in costs])
        matches = []
        for (s, i), cost, flat in zip(pairs, costs, host):
            # Rows come back sorted: the queries in ascending order.
            rows, cols = linear_sum_assignment(flat.view(cost.shape).numpy())
            matches.append((np.full_like(rows, s), np.full_like(rows, i), rows, cols + first[i]))
        return tuple(torch.from_numpy(np.concatenate(column)).to(gt_labels)
                     for column in zip(*matches))

    def _check_targets(self, gt_instances: InstanceData, index: int) -> None:
        labels = gt_instances.get('labels', None)
        masks = gt_instances.get('masks', None)
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.dtype != torch.long:
            raise TypeError(f'EoMTLoss: batch_gt_instances[{index}].labels must be a long '
                            f'tensor (N,), got {getattr(labels, "dtype", type(labels).__name__)}')
        if not isinstance(masks, Tensor) or masks.dim() != 3 or len(masks) != len(labels):
            raise TypeError(
                f'EoMTLoss: batch_gt_instances[{index}].masks must be a tensor (N, H, W) with '
                f'N = {len(labels)} (as labels), got '
                f'{getattr(masks, "shape", type(masks).__name__)}')
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f'EoMTLoss: batch_gt_instances[{index}].labels must lie in '
                             f'[0, {self.num_classes}), got {labels.tolist()}')
