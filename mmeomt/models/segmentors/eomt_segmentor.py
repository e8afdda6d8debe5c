"""mmseg adapter of EoMT: semantic segmentation with EoMT's windowed inference.

Training turns ``gt_sem_seg`` into one target mask per class present (docs/method.md §5) and
calls the core and :class:`EoMTLoss`.  Inference turns mask and class logits into per-pixel
class scores ``sum_q sigmoid(mask_q) * softmax(class_q)[:-1]`` and, in ``window`` mode, averages
them over square windows slid along the long side of the image (docs/method.md §6).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmseg.models.decode_heads import Mask2FormerHead as MMSegMask2FormerHead
from mmseg.models.segmentors import BaseSegmentor
from mmseg.utils import OptSampleList, SampleList
from torch import Tensor

from mmeomt.registry import MODELS
from ..checkpoint.hook import attach_checkpoint_hook, init_weights_then_load


def window_starts(length: int, crop: int) -> List[int]:
    """Starts of EoMT's windows along a side of ``length >= crop`` pixels.

    ``n = ceil(length / crop)`` windows of size ``crop``; the total overlap
    ``n * crop - length`` is spread evenly and window ``j`` starts at
    ``int(j * (crop - overlap / (n - 1)))`` (truncation, as the authors).
    """
    if length < crop:
        raise ValueError(f'window_starts: length {length} is shorter than the crop {crop}')
    num_windows = math.ceil(length / crop)
    overlap = num_windows * crop - length
    overlap_per_window = overlap / (num_windows - 1) if overlap > 0 else 0
    return [int(j * (crop - overlap_per_window)) for j in range(num_windows)]


def per_pixel_scores(mask_logits: Tensor, class_logits: Tensor) -> Tensor:
    """Semantic class scores from mask classification.

    Args:
        mask_logits: ``(B, Q, H, W)``.
        class_logits: ``(B, Q, C + 1)``.

    Returns:
        ``(B, C, H, W)`` = ``sum_q sigmoid(mask_q) * softmax(class_q)[:C]``; the no-object
        probability is dropped without renormalising, as the authors.
    """
    return torch.einsum('bqhw,bqc->bchw', mask_logits.sigmoid(),
                        class_logits.softmax(-1)[..., :-1])


@MODELS.register_module()
class EoMTSegmentor(BaseSegmentor):
    """EoMT for semantic segmentation.

    Inference (``test_cfg.mode``):

    * ``'window'`` (EoMT's): the test pipeline resizes the image so that its *short* side equals
      the crop; the long side is covered by ``ceil(long / crop)`` square windows whose overlap
      is spread evenly (:func:`window_starts`).  Each window's final mask logits are upsampled
      bilinearly to the window, turned into :func:`per_pixel_scores`, and overlapping windows
      are averaged (sum / count).  An input whose short side is not the crop is first resized
      bilinearly here (on the normalised tensor; the authors resize the uint8 image with PIL)
      and the averaged scores are resized back, so ``predict`` accepts any input size.
      Padding added by the data preprocessor (``padding_size`` / ``img_padding_size``) is
      excluded from the windows.
    * ``'whole'``: one forward on the whole (padded) input.

    mmseg's ``postprocess_result`` then removes the padding, resizes the scores bilinearly to
    ``ori_shape`` and takes the argmax.

    Args:
        eomt: config of the core (``mmeomt.EoMT``) with ``num_classes`` classes.
        loss: config of ``mmeomt.EoMTLoss``; ``num_classes`` defaults to the core's.
        num_classes: ``C`` (at least 2: mmseg thresholds a single channel instead of argmax).
        ignore_index: label of unlabelled pixels; they belong to no target mask.
        test_cfg: ``dict(mode='window', crop_size=(h, w))`` (window side = ``min(h, w)``, the
            authors' choice) or ``dict(mode='whole')``.
        data_preprocessor: e.g. ``mmseg.SegDataPreProcessor`` config.
        init_cfg: mmengine init config.
        skip_mismatched: prefixes of parameter names, e.g. ``['eomt.class_head']`` to
            fine-tune a checkpoint on another label set, whose checkpoint values are skipped
            when absent or of another shape (they keep their initialisation).  Any other
            mismatch fails a strict load; see :mod:`mmeomt.models.checkpoint`, which also
            converts the authors' and transformers checkpoints on load.
    """

    # mmseg's conversion of gt_sem_seg into one (label, mask) per present class, ignore_index
    # excluded; it reads only `self.ignore_index`.
    _seg_data_to_instance_data = MMSegMask2FormerHead._seg_data_to_instance_data

    def __init__(self,
                 eomt: dict,
                 loss: dict,
                 num_classes: int,
                 ignore_index: int = 255,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 skip_mismatched: Sequence[str] = ()):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if num_classes < 2:
            raise ValueError(f'EoMTSegmentor: num_classes must be >= 2, got {num_classes}')
        self.eomt = MODELS.build(eomt)
        self.skip_mismatched = tuple(skip_mismatched)
        if self.eomt.num_classes != num_classes:
            raise ValueError(f'EoMTSegmentor: eomt.num_classes ({self.eomt.num_classes}) must '
                             f'equal num_classes ({num_classes})')
        loss = dict(loss)
        loss.setdefault('num_classes', num_classes)
        if loss['num_classes'] != num_classes:
            raise ValueError(f'EoMTSegmentor: loss.num_classes ({loss["num_classes"]}) must '
                             f'equal num_classes ({num_classes})')
        # Named as in the authors' code: `loss` is the training method.
        self.criterion = MODELS.build(loss)
        self.num_classes = num_classes
        self.out_channels = num_classes
        self.ignore_index = ignore_index
        # Read by BaseSegmentor.postprocess_result when resizing to ori_shape.
        self.align_corners = False

        self.test_cfg = dict(mode='window', crop_size=(512, 512)) if test_cfg is None \
            else dict(test_cfg)
        mode = self.test_cfg.get('mode')
        if mode not in ('window', 'whole'):
            raise ValueError(f"EoMTSegmentor: test_cfg.mode must be 'window' or 'whole', "
                             f'got {mode!r}')
        if mode == 'window':
            crop_size = self.test_cfg.get('crop_size')
            crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
            if not (isinstance(crop_size, Sequence) and len(crop_size) == 2):
                raise ValueError('EoMTSegmentor: window mode needs test_cfg.crop_size = (h, w) '
                                 f'or an int, got {crop_size!r}')
            self.crop = min(crop_size)
        # Checkpoints of any format are converted, fitted and checked on load.
        attach_checkpoint_hook(self, 'model')

    def init_weights(self) -> None:
        """mmengine's initialisation; a ``Pretrained`` init_cfg loads any whole-model format
        with :func:`mmeomt.models.checkpoint.load_pretrained` (strict unless it says otherwise).
        """
        base_init = super().init_weights
        init_weights_then_load(self, lambda pretrained: base_init())

    def extract_feat(self, inputs: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        """The core's predictions: lists of ``(B, Q, H_m, W_m)`` (``H/4`` at patch 16, see
        :class:`~mmeomt.models.EoMT`) and ``(B, Q, C + 1)``."""
        return self.eomt(inputs)

    def _forward(self, inputs: Tensor,
                 data_samples: OptSampleList = None) -> Tuple[List[Tensor], List[Tensor]]:
        """Tensor mode: the core's raw ``(mask_logits_list, class_logits_list)``."""
        return self.extract_feat(inputs)

    def encode_decode(self, inputs: Tensor, batch_img_metas: Optional[List[dict]] = None
                      ) -> Tensor:
        """Per-pixel class scores ``(B, C, H, W)`` of one forward on ``inputs``."""
        mask_logits_list, class_logits_list = self.eomt(inputs)
        mask_logits = F.interpolate(mask_logits_list[-1], size=inputs.shape[-2:],
                                    mode='bilinear', align_corners=False)
        return per_pixel_scores(mask_logits, class_logits_list[-1])

    def loss(self, inputs: Tensor, data_samples: SampleList) -> Dict[str, Tensor]:
        """Loss of all prediction sets; every class present in ``gt_sem_seg`` is one target.

        Args:
            inputs: normalised images ``(B, 3, H, W)``.
            data_samples: with ``gt_sem_seg`` ``(1, H, W)`` (padded like the images).
        """
        batch_gt_instances, batch_img_metas = self._seg_data_to_instance_data(data_samples)
        for i, gt_instances in enumerate(batch_gt_instances):
            gt_instances.labels = gt_instances.labels.long()
            bad = gt_instances.labels[gt_instances.labels >= self.num_classes]
            if bad.numel():
                # Else the loss fails with an index error far from the cause (a custom
                # dataset's label convention; docs/custom_dataset.md).
                raise ValueError(
                    f'EoMTSegmentor: the label map of {batch_img_metas[i].get("seg_map_path")} '
                    f'holds values {sorted(set(bad.tolist()))}; expected class indices '
                    f'0..{self.num_classes - 1} or ignore_index {self.ignore_index} (labels '
                    '1..K with 0 = unlabelled need reduce_zero_label=True in the dataset)')
            if gt_instances.masks.shape[-2:] != inputs.shape[-2:]:
                raise ValueError(
                    f'EoMTSegmentor: gt_sem_seg of image {i} is '
                    f'{tuple(gt_instances.masks.shape[-2:])}, the batch input '
                    f'{tuple(inputs.shape[-2:])}; pad both alike (SegDataPreProcessor does)')
        mask_logits_list, class_logits_list = self.eomt(inputs)
        return self.criterion.loss(mask_logits_list, class_logits_list, batch_gt_instances,
                                   batch_img_metas)

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """Semantic prediction at ``ori_shape``.

        Args:
            inputs: normalised images ``(B, 3, H, W)``.
            data_samples: with ``ori_shape`` and, if the preprocessor padded,
                ``padding_size``; ``None`` returns predictions at the input size.

        Returns:
            data samples with ``seg_logits`` (the averaged scores, ``(C, h, w)``) and
            ``pred_sem_seg`` ``(1, h, w)``.
        """
        if data_samples is not None:
            batch_img_metas = [data_sample.metainfo for data_sample in data_samples]
        else:
            batch_img_metas = [dict(ori_shape=inputs.shape[2:], padding_size=[0, 0, 0, 0])
                               ] * inputs.shape[0]
        if self.test_cfg['mode'] == 'whole':
            return self.postprocess_result(self.encode_decode(inputs, batch_img_metas),
                                           data_samples)
        # One image at a time: a batch holds one score map, of the image being finished.
        results = []
        for i, img_meta in enumerate(batch_img_metas):
            scores = self.window_inference(inputs[i:i + 1], [img_meta])
            results += self.postprocess_result(
                scores, None if data_samples is None else data_samples[i:i + 1])
        return results

    def window_inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Window-averaged scores ``(B, C, H, W)`` (zero on padding, which is removed later)."""
        H, W = inputs.shape[-2:]
        scores = []
        for i, img_meta in enumerate(batch_img_metas):
            # The keys and (left, right, top, bottom) order of postprocess_result.
            padding = img_meta.get('img_padding_size', img_meta.get('padding_size', [0] * 4))
            left, right, top, bottom = padding
            image_scores = self.slide(inputs[i:i + 1, :, top:H - bottom, left:W - right])
            scores.append(F.pad(image_scores, tuple(padding)) if any(padding) else image_scores)
        return scores[0] if len(scores) == 1 else torch.cat(scores)

    def slide(self, image: Tensor) -> Tensor:
        """EoMT's windowed inference on one image.

        One forward runs all windows; their scores are then made and added one window at a
        time, so besides the sum only one window's ``(C, crop, crop)`` scores and its queries'
        masks upsampled to the window exist at once.

        Args:
            image: ``(1, 3, h, w)``, normalised, without padding.

        Returns:
            averaged per-pixel class scores ``(1, C, h, w)``.
        """
        h, w = image.shape[-2:]
        crop = self.crop
        if min(h, w) != crop:
            scale = crop / min(h, w)
            size = (max(crop, round(h * scale)), max(crop, round(w * scale)))
            image = F.interpolate(image, size=size, mode='bilinear', align_corners=False)
        H, W = image.shape[-2:]
        along_h = H > W
        regions = [(slice(s, s + crop), slice(None)) if along_h else
                   (slice(None), slice(s, s + crop))
                   for s in window_starts(H if along_h else W, crop)]
        mask_logits_list, class_logits_list = self.eomt(
            torch.cat([image[..., rows, cols] for rows, cols in regions]))

        sums = image.new_zeros(1, self.num_classes, H, W)
        counts = image.new_zeros(1, 1, H, W)
        for j, (rows, cols) in enumerate(regions):
            mask_logits = F.interpolate(mask_logits_list[-1][j:j + 1], size=(crop, crop),
                                        mode='bilinear', align_corners=False)
            sums[..., rows, cols] += per_pixel_scores(mask_logits,
                                                      class_logits_list[-1][j:j + 1])
            counts[..., rows, cols] += 1
        scores = sums.div_(counts)
        if (H, W) != (h, w):
            scores = F.interpolate(scores, size=(h, w), mode='bilinear', align_corners=False)
        return scores
