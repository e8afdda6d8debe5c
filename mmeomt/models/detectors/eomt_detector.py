"""mmdet adapter of EoMT: panoptic and instance segmentation.

Data samples in, data samples out.  Training turns each ``DetDataSample`` into one
``InstanceData(labels, masks)`` of target masks and calls the core and :class:`EoMTLoss`;
inference runs the core once and hands the final mask logits to :class:`EoMTFusionHead`:
mmdet's ``MaskFormerFusionHead`` rules (EoMT's post-processing, docs/method.md §6) applied to
the selected queries only.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.detectors import BaseDetector, MaskFormer
from mmdet.structures import SampleList
from mmengine.structures import InstanceData
from torch import Tensor

from mmeomt.registry import MODELS
from ..checkpoint.hook import attach_checkpoint_hook, init_weights_then_load
from .fusion_head import EoMTFusionHead


def panoptic_targets(labels: Tensor, masks, sem_seg: Optional[Tensor], num_things: int,
                     num_stuff: int) -> Tuple[Tensor, Tensor]:
    """mmdet's ``preprocess_panoptic_gt`` with boolean masks: the same targets in the same order.

    Things first (``masks``: mmdet mask structure or ``(N, H, W)`` tensor), then one mask per
    stuff class present in ``sem_seg`` ``(1, H, W)`` (``None``: things only), in the order of
    ``torch.unique(..., sorted=False)`` as mmdet's.  Ours because mmdet's returns int64 masks:
    8 bytes a pixel, ~60 MB an image at 640 x 640 that the loss then reads again to convert to
    float; at EoMT-S 640 that was ~30 ms of a training step per image.

    Returns:
        ``labels`` ``(n,)`` and boolean ``masks`` ``(n, H, W)``.
    """
    if isinstance(masks, Tensor):
        things = masks.bool()
    else:
        things = masks.to_tensor(dtype=torch.bool, device=labels.device)
    if sem_seg is None:
        return labels, things
    sem_seg = sem_seg.squeeze(0)
    stuff_labels = [label for label in torch.unique(sem_seg, sorted=False)
                    if num_things <= label < num_things + num_stuff]
    if not stuff_labels:
        return labels, things
    stuff_labels = torch.stack(stuff_labels)
    stuff = sem_seg[None] == stuff_labels[:, None, None]
    return torch.cat([labels, stuff_labels.to(labels.dtype)]), torch.cat([things, stuff])


DEFAULT_TEST_CFG = dict(
    panoptic_on=True,
    semantic_on=False,
    instance_on=False,
    max_per_image=100,
    object_mask_thr=0.8,
    iou_thr=0.8,
    filter_low_score=True)


@MODELS.register_module()
class EoMTDetector(BaseDetector):
    """EoMT for panoptic (things + stuff) and instance (things only) segmentation.

    Post-processing follows mmdet's ``MaskFormerFusionHead``, checked line by line against the
    authors' code (docs/method.md §6); :class:`EoMTFusionHead` applies its rules to the queries
    a result keeps, before resizing anything:

    * The final mask logits ``(B, Q, H_m, W_m)`` (the core's mask resolution, ``H/4`` at
      patch 16) of the selected queries are upsampled
      bilinearly (``align_corners=False``) to the padded batch input, the padding
      (``img_shape``) is removed and they are resized bilinearly to ``ori_shape``, as the
      authors do.
    * Panoptic: softmax max over ``C + 1`` classes, keep ``label != no-object and score >
      object_mask_thr`` (strict), per-pixel argmax of ``score * sigmoid(mask)``; the ratio test
      compares the argmax area with the area of ``sigmoid >= 0.5`` *before* that area is
      intersected (the authors' rule, which differs from Mask2Former's), and with
      ``filter_low_score=True`` a segment keeps only its pixels with ``sigmoid >= 0.5`` (so it
      is on by default here; mmdet's default is off).  ``ratio < iou_thr`` is dropped, stuff of
      one class is merged.  Where the authors also skip a segment whose filtered area is 0,
      mmdet writes an empty mask, which leaves the same output.  Output encoding is mmdet's
      (``class + instance_id * INSTANCE_OFFSET``, void = ``num_classes``), which
      ``CocoPanopticMetric`` reads.
    * Instance: top ``max_per_image`` over (query, class) softmax scores without no-object,
      mask = ``logit > 0``, score = class score * mean sigmoid inside the mask (+1e-6), as the
      authors.  mmdet additionally keeps only thing classes, a no-op for instance models
      (``num_stuff_classes = 0``), and adds boxes from the masks.

    Args:
        eomt: config of the core (``mmeomt.EoMT``); its ``num_classes`` must equal
            ``num_things_classes + num_stuff_classes``.
        loss: config of ``mmeomt.EoMTLoss``; ``num_classes`` defaults to the core's.
        num_things_classes: thing classes come first in the label space ...
        num_stuff_classes: ... then stuff classes (0 for instance segmentation).
        test_cfg: post-processing options of ``EoMTFusionHead`` (mmdet's); keys given here
            override :data:`DEFAULT_TEST_CFG` (EoMT's values).  Instance models set
            ``panoptic_on=False, instance_on=True``.
        data_preprocessor: e.g. ``mmdet.DetDataPreprocessor`` config.
        init_cfg: mmengine init config.
        skip_mismatched: prefixes of parameter names, e.g. ``['eomt.class_head']`` to
            fine-tune a checkpoint on another label set, whose checkpoint values are skipped
            when absent or of another shape (they keep their initialisation).  Any other
            mismatch fails a strict load; see :mod:`mmeomt.models.checkpoint`, which also
            converts the authors' and transformers checkpoints on load.
        checkpoint_class_order: for each class of this model, its index in the class head of
            the authors' (or transformers) checkpoints this config loads, when they number the
            classes differently; e.g. the ADE20K panoptic configs, whose dataset lists things
            first while the authors use ADE20K's 150-class order.
    """

    # The per-task results of the fusion head go into the data samples as mmdet's
    # MaskFormer puts them (pred_panoptic_seg / pred_instances).
    add_pred_to_datasample = MaskFormer.add_pred_to_datasample

    def __init__(self,
                 eomt: dict,
                 loss: dict,
                 num_things_classes: int,
                 num_stuff_classes: int,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 skip_mismatched: Sequence[str] = (),
                 checkpoint_class_order: Optional[Sequence[int]] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.eomt = MODELS.build(eomt)
        self.skip_mismatched = tuple(skip_mismatched)
        self.checkpoint_class_order = checkpoint_class_order
        self.num_things_classes = num_things_classes
        self.num_stuff_classes = num_stuff_classes
        self.num_classes = num_things_classes + num_stuff_classes
        if self.eomt.num_classes != self.num_classes:
            raise ValueError(
                f'EoMTDetector: eomt.num_classes ({self.eomt.num_classes}) must equal '
                f'num_things_classes + num_stuff_classes ({num_things_classes} + '
                f'{num_stuff_classes} = {self.num_classes})')
        if checkpoint_class_order is not None and len(checkpoint_class_order) != self.num_classes:
            raise ValueError(f'EoMTDetector: checkpoint_class_order needs one entry per class '
                             f'({self.num_classes}), got {len(checkpoint_class_order)}')
        loss = dict(loss)
        loss.setdefault('num_classes', self.num_classes)
        if loss['num_classes'] != self.num_classes:
            raise ValueError(f'EoMTDetector: loss.num_classes ({loss["num_classes"]}) must equal '
                             f'eomt.num_classes ({self.num_classes})')
        # Named as in the authors' code: `loss` is the training method.
        self.criterion = MODELS.build(loss)

        self.test_cfg = {**DEFAULT_TEST_CFG, **(test_cfg or {})}
        if self.test_cfg['semantic_on']:
            raise ValueError('EoMTDetector: test_cfg.semantic_on is not supported (mmdet\'s '
                             'MaskFormerFusionHead has no semantic output); use EoMTSegmentor')
        if not (self.test_cfg['panoptic_on'] or self.test_cfg['instance_on']):
            raise ValueError('EoMTDetector: test_cfg needs panoptic_on or instance_on')
        top_k_pool = self.eomt.num_queries * self.num_classes
        if self.test_cfg['instance_on'] and self.test_cfg['max_per_image'] > top_k_pool:
            raise ValueError(
                f'EoMTDetector: test_cfg.max_per_image ({self.test_cfg["max_per_image"]}) must '
                f'not exceed num_queries * num_classes ({top_k_pool}), the pool of top-k')
        self.fusion_head = EoMTFusionHead(
            num_things_classes=num_things_classes,
            num_stuff_classes=num_stuff_classes,
            test_cfg=self.test_cfg)
        # Checkpoints of any format are converted, fitted and checked on load.
        attach_checkpoint_hook(self, 'model')

    def init_weights(self) -> None:
        """mmengine's initialisation; a ``Pretrained`` init_cfg loads any whole-model format
        with :func:`mmeomt.models.checkpoint.load_pretrained` (strict unless it says otherwise).
        """
        base_init = super().init_weights
        init_weights_then_load(self, lambda pretrained: base_init())

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        """The core's predictions: lists of ``(B, Q, H_m, W_m)`` (``H/4`` at patch 16, see
        :class:`~mmeomt.models.EoMT`) and ``(B, Q, C + 1)``."""
        return self.eomt(batch_inputs)

    def _forward(self, batch_inputs: Tensor,
                 batch_data_samples: Optional[SampleList] = None
                 ) -> Tuple[List[Tensor], List[Tensor]]:
        """Tensor mode: the core's raw ``(mask_logits_list, class_logits_list)``."""
        return self.extract_feat(batch_inputs)

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Loss of all prediction sets.

        Args:
            batch_inputs: normalised images ``(B, 3, H, W)``.
            batch_data_samples: with ``gt_instances`` (``labels``, ``masks``) and, for panoptic
                models, ``gt_sem_seg`` (stuff classes read from it).

        Returns:
            ``loss_cls``, ``loss_mask``, ``loss_dice``, ``d{i}.loss_*``.
        """
        mask_logits_list, class_logits_list = self.eomt(batch_inputs)
        input_shape = tuple(batch_inputs.shape[-2:])
        batch_gt_instances = [
            self.targets(data_sample, input_shape) for data_sample in batch_data_samples
        ]
        batch_img_metas = [data_sample.metainfo for data_sample in batch_data_samples]
        return self.criterion.loss(mask_logits_list, class_logits_list, batch_gt_instances,
                                   batch_img_metas)

    def targets(self, data_sample, input_shape: Tuple[int, int]) -> InstanceData:
        """Target masks of one image: things from ``gt_instances``, stuff from ``gt_sem_seg``.

        Crowd instances are not targets: mmdet's ``PackDetInputs`` moves them to
        ``ignored_instances``; an ``ignore_flags`` field in ``gt_instances`` is honoured too.
        Their pixels are background, as in the authors' training.

        Returns:
            ``labels`` ``(N,)`` long and ``masks`` ``(N, H, W)`` bool, zero-padded
            bottom/right to the batch input ``(H, W)`` as the image is.
        """
        gt_instances = data_sample.gt_instances
        if 'ignore_flags' in gt_instances:
            gt_instances = gt_instances[~gt_instances.ignore_flags.bool()]
        labels, masks = gt_instances.labels, gt_instances.masks
        sem_seg = None
        if self.num_stuff_classes > 0:
            if 'gt_sem_seg' not in data_sample:
                raise KeyError(
                    'EoMTDetector: a panoptic model (num_stuff_classes = '
                    f'{self.num_stuff_classes}) needs data_sample.gt_sem_seg for the stuff '
                    'targets; load annotations with LoadPanopticAnnotations(with_seg=True)')
            sem_seg = data_sample.gt_sem_seg.sem_seg
        labels, masks = panoptic_targets(labels, masks, sem_seg, self.num_things_classes,
                                         self.num_stuff_classes)
        h, w = masks.shape[-2:]
        if h > input_shape[0] or w > input_shape[1]:
            raise ValueError(f'EoMTDetector: target masks ({h}, {w}) are larger than the batch '
                             f'input {input_shape}')
        # Batched images are padded bottom/right; the masks must cover the same area.
        masks = F.pad(masks, (0, input_shape[1] - w, 0, input_shape[0] - h))
        return InstanceData(labels=labels.long(), masks=masks)

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Final prediction -> panoptic and/or instance results.

        Args:
            batch_inputs: normalised, padded images ``(B, 3, H, W)``.
            batch_data_samples: with ``img_shape`` (un-padded size) and ``ori_shape``.
            rescale: resize results to ``ori_shape`` (else they stay at ``img_shape``).

        Returns:
            the data samples with ``pred_panoptic_seg`` (``sem_seg`` ``(1, h, w)``) and/or
            ``pred_instances`` (``masks`` ``(N, h, w)``, ``labels``, ``scores``, ``bboxes``).
        """
        mask_logits_list, class_logits_list = self.eomt(batch_inputs)
        results_list = self.fusion_head.predict(class_logits_list[-1], mask_logits_list[-1],
                                                batch_data_samples,
                                                batch_input_shape=batch_inputs.shape[-2:],
                                                rescale=rescale)
        return self.add_pred_to_datasample(batch_data_samples, results_list)
