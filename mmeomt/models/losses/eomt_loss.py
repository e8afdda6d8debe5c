"""EoMT's training objective: Mask2Former's matching + mask-classification loss (EOMT.md §2).

Per image and per prediction set, queries are matched one-to-one to target masks by the
Hungarian algorithm on ``2 * class + 5 * BCE + 5 * dice`` (mask costs on 12544 uniformly sampled
points); the loss is ``2 * CE`` over ``C + 1`` classes (no-object weight 0.1) plus ``5 * BCE`` and
``5 * dice`` on 12544 importance-sampled points of the matched masks, normalised by the number of
target masks (mean over ranks, at least 1).  Every one of the ``L2 + 1`` prediction sets is
supervised with the same weight; mmengine sums the returned ``loss_*`` entries.

mmdet 3.3's ``Mask2FormerHead`` already implements exactly this, so it is reused rather than
rewritten; see :class:`EoMTLoss` for how, and for where EoMT differs.
"""
from typing import Dict, List, Optional, Sequence

import torch
from mmdet.models.dense_heads import Mask2FormerHead, MaskFormerHead
from mmdet.registry import TASK_UTILS
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
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


@MODELS.register_module()
class EoMTLoss(BaseModule):
    """Hungarian matching and mask-classification loss over all prediction sets.

    How mmdet is reused: ``Mask2FormerHead`` is a full decoder head (pixel decoder, transformer
    decoder, its own ``forward``/``predict``/``init_weights``); EoMT has none of that, only the
    loss.  Subclassing it would mean skipping its ``__init__`` and disabling its inherited
    forward/predict/init_weights.  Instead this module borrows the four plain functions that make
    up the loss (``loss_by_feat`` -> ``_loss_by_feat_single`` -> ``get_targets`` ->
    ``_get_targets_single``) and sets exactly the attributes they read: ``assigner``,
    ``sampler``, ``num_points``, ``oversample_ratio``, ``importance_sample_ratio``,
    ``loss_cls``/``loss_mask``/``loss_dice``, ``class_weight``, ``num_classes`` and
    ``num_queries``.  None of them calls ``super()``, so they run unchanged on this class.

    Checked against the authors' loss (a subclass of transformers' ``Mask2FormerLoss``):
    softmax class cost, pairwise sigmoid BCE mean over points, dice ``1 - (2a + 1)/(b + c + 1)``,
    the same uniform points for predictions and targets (``grid_sample``,
    ``align_corners=False``), importance sampling with uncertainty ``-|logit|`` over
    ``3 * num_points`` candidates, weighted-mean CE (sum of weights as denominator), BCE
    "mean over points, sum over masks" and dice "sum over masks", both divided by the number of
    target masks.  Differences:

    * mmdet normalises the mask losses by ``sum_i max(num_matched_i, 1)``; EoMT by the number of
      target masks.  They differ for images without targets (and with more targets than
      queries), so :meth:`get_targets` replaces that count.
    * The authors' matcher clamps the cost matrix to +-1e10 and zeroes NaNs; mmdet's does not
      (scipy then raises on a diverged model instead of matching arbitrarily).
    * Logits are cast to float32 here, so under AMP the matching and losses run in full
      precision.

    Args:
        num_classes: ``C`` (things + stuff); class logits have ``C + 1`` entries.
        num_points: points sampled per mask for the costs and the mask losses.
        oversample_ratio: importance sampling draws ``oversample_ratio * num_points``
            candidates ...
        importance_sample_ratio: ... and keeps this fraction of ``num_points`` as the most
            uncertain ones; the rest are uniform.
        assigner: mmdet assigner config; ``None`` = Hungarian on class 2.0, BCE 5.0, dice 5.0.
        loss_cls: mmdet ``CrossEntropyLoss`` config; ``None`` = weight 2.0 with
            ``class_weight = [1] * C + [0.1]``.  A config without ``class_weight`` gets that one.
        loss_mask: ``None`` = sigmoid ``CrossEntropyLoss``, weight 5.0.
        loss_dice: ``None`` = naive ``DiceLoss``, eps 1.0, weight 5.0.
        init_cfg: unused (no parameters); kept for the mmengine interface.
    """

    # The mmdet functions this module runs (see the class docstring).
    _get_targets_single = Mask2FormerHead._get_targets_single
    _loss_by_feat_single = Mask2FormerHead._loss_by_feat_single
    loss_by_feat = MaskFormerHead.loss_by_feat

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
        self.num_classes = num_classes
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        # Set from the predictions in every `loss` call (mmdet reads it for the label targets).
        self.num_queries = None

        self.assigner = TASK_UTILS.build(DEFAULT_ASSIGNER if assigner is None else assigner)
        # EoMT's queries are either matched or "no object": the pseudo sampler takes the
        # assignment as it is.
        self.sampler = TASK_UTILS.build(dict(type='mmdet.MaskPseudoSampler'))

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

    def get_targets(self, cls_scores_list: List[Tensor], mask_preds_list: List[Tensor],
                    batch_gt_instances: List[InstanceData], batch_img_metas: List[dict],
                    return_sampling_results: bool = False) -> tuple:
        """mmdet's per-image targets, with EoMT's mask-loss normaliser.

        Returns ``(labels_list, label_weights_list, mask_targets_list, mask_weights_list,
        num_masks, ...)`` as ``MaskFormerHead.get_targets``, but ``num_masks`` is the number of
        target masks in the batch (mmdet counts ``max(matched, 1)`` per image).
        ``_loss_by_feat_single`` then averages it over ranks and clamps it at 1.
        """
        targets = MaskFormerHead.get_targets(self, cls_scores_list, mask_preds_list,
                                             batch_gt_instances, batch_img_metas,
                                             return_sampling_results)
        num_masks = sum(len(gt_instances) for gt_instances in batch_gt_instances)
        return targets[:4] + (num_masks, ) + targets[5:]

    def loss(self, mask_logits_list: Sequence[Tensor], class_logits_list: Sequence[Tensor],
             batch_gt_instances: List[InstanceData],
             batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """Loss of every prediction set.

        Args:
            mask_logits_list: per prediction set ``(B, Q, h, w)`` (``h, w`` = H/4, W/4); the
                last is the final prediction.
            class_logits_list: per prediction set ``(B, Q, C + 1)``.
            batch_gt_instances: per image ``labels`` LongTensor ``(N,)`` in ``[0, C)`` and
                ``masks`` ``(N, H, W)`` (bool/uint8/float) covering the same area as the
                (padded) network input; ``N`` may be 0.
            batch_img_metas: per image meta information (passed to the assigner).

        Returns:
            ``loss_cls``, ``loss_mask``, ``loss_dice`` for the final prediction and
            ``d{i}.loss_cls`` etc. for the ``i``-th intermediate one (each weighted already).
        """
        if len(mask_logits_list) != len(class_logits_list) or not mask_logits_list:
            raise ValueError(
                'EoMTLoss: mask_logits_list and class_logits_list must be non-empty and of equal '
                f'length, got {len(mask_logits_list)} and {len(class_logits_list)}')
        batch_size, num_queries, num_logits = class_logits_list[-1].shape
        if num_logits != self.num_classes + 1:
            raise ValueError(f'EoMTLoss: class logits have {num_logits} entries; num_classes = '
                             f'{self.num_classes} needs {self.num_classes + 1}')
        if len(batch_gt_instances) != batch_size or len(batch_img_metas) != batch_size:
            raise ValueError(
                f'EoMTLoss: {batch_size} images but {len(batch_gt_instances)} gt instances and '
                f'{len(batch_img_metas)} img metas')
        for i, gt_instances in enumerate(batch_gt_instances):
            self._check_targets(gt_instances, i)
        self.num_queries = num_queries
        return self.loss_by_feat([c.float() for c in class_logits_list],
                                 [m.float() for m in mask_logits_list],
                                 batch_gt_instances, batch_img_metas)

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
