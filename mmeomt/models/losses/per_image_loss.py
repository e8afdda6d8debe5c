"""The per-image implementation of :class:`EoMTLoss`, kept as its reference.

Until the batched loss replaced it, ``EoMTLoss`` ran mmdet 3.3's ``Mask2FormerHead`` loss
functions unchanged: ``loss_by_feat`` -> ``_loss_by_feat_single`` (per prediction set) ->
``get_targets`` -> ``_get_targets_single`` (per image: uniform points, mmdet's
``HungarianAssigner`` and ``MaskPseudoSampler``), then importance-sampled point losses per set.
The tests compare the two on fixed inputs, and ``tools/analysis_tools/train_benchmark.py
--compare-old-loss`` times both in one run.  Not registered: configs use :class:`EoMTLoss`.
"""
from typing import Dict, List

from mmdet.models.dense_heads import Mask2FormerHead, MaskFormerHead
from mmdet.registry import TASK_UTILS
from mmengine.structures import InstanceData
from torch import Tensor

from .eomt_loss import EoMTLoss


class PerImageEoMTLoss(EoMTLoss):
    """:class:`EoMTLoss` computed by mmdet's per-image ``Mask2FormerHead`` functions.

    The borrowed functions read ``assigner``, ``sampler``, ``num_points``,
    ``oversample_ratio``, ``importance_sample_ratio``, ``loss_cls``/``loss_mask``/``loss_dice``,
    ``class_weight``, ``num_classes`` and ``num_queries``, and none calls ``super()``, so they
    run unchanged on this class.  Same arguments as :class:`EoMTLoss`.
    """

    _get_targets_single = Mask2FormerHead._get_targets_single
    _loss_by_feat_single = Mask2FormerHead._loss_by_feat_single

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # EoMT's queries are either matched or "no object": the pseudo sampler takes the
        # assignment as it is.
        self.sampler = TASK_UTILS.build(dict(type='mmdet.MaskPseudoSampler'))
        self.num_queries = None

    def loss_by_feat(self, class_logits_list: List[Tensor], mask_logits_list: List[Tensor],
                     batch_gt_instances: List[InstanceData],
                     batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        self.num_queries = class_logits_list[0].shape[1]  # mmdet reads it for the label targets
        return MaskFormerHead.loss_by_feat(self, class_logits_list, mask_logits_list,
                                           batch_gt_instances, batch_img_metas)

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
