"""EoMT's panoptic and instance post-processing, selecting queries before resizing any mask.

The rules are mmdet's ``MaskFormerFusionHead`` with EoMT's settings (see
:class:`~mmeomt.models.detectors.EoMTDetector`); only the order of work differs.  mmdet's head
takes every query's mask already upsampled to the padded input and resizes all ``Q`` of them to
``ori_shape`` before it selects anything: ``O(Q x pixels)`` time and memory (200 x 2943 x 1435
floats are 3.4 GB per copy).  :class:`EoMTFusionHead` takes the core's mask logits (at
``H_m = (H // patch) * 2**n``, stride 4 at patch 16), selects the queries a result can use
(panoptic: ``label != no-object and score > object_mask_thr``; instance: the queries of the
top-k (query, class) pairs), and resizes only those, in chunks of a bounded number of pixels,
with the same steps (bilinear, ``align_corners=False``: mask resolution -> padded
batch input -> crop to ``img_shape`` -> ``ori_shape``).  Resizing, sigmoid and products act on
each mask alone, so the selected masks are bit for bit the ones mmdet's head would have used and
every output pixel and score is the same (``tests/test_models/test_fusion_head.py``).
"""
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.models.seg_heads import MaskFormerFusionHead
from mmdet.structures import SampleList
from mmdet.structures.mask import mask2bbox
from mmengine.structures import InstanceData, PixelData
from torch import Tensor

# Masks resized at once: a chunk of K masks of P output pixels holds K * P <= this many floats
# (16 MB: below glibc's largest mmap threshold, so chunks reuse memory instead of faulting in
# fresh pages, and they stay in cache longer), whatever the image size.
CHUNK_ELEMENTS = 2**22
# Pixels of a chunk processed at once by the panoptic fusion: 1 MB of floats, which stay in
# cache through its eight elementwise steps (x2.5 faster than whole planes on a large photo).
STRIP_ELEMENTS = 2**18


def resize_mask_logits(mask_logits: Tensor, batch_input_shape: Tuple[int, int],
                       img_shape: Tuple[int, int],
                       ori_shape: Optional[Tuple[int, int]] = None) -> Tensor:
    """Stride-4 mask logits ``(K, h, w)`` -> ``(K, H, W)`` at the image's resolution.

    Bilinear (``align_corners=False``) to the padded batch input, crop to ``img_shape`` (the
    padding is bottom/right), then bilinear to ``ori_shape`` when given, as the authors.
    """
    masks = F.interpolate(mask_logits[None], size=tuple(batch_input_shape), mode='bilinear',
                          align_corners=False)[0]
    masks = masks[:, :img_shape[0], :img_shape[1]]
    if ori_shape is not None:
        masks = F.interpolate(masks[:, None], size=tuple(ori_shape), mode='bilinear',
                              align_corners=False)[:, 0]
    return masks


def chunks(num: int, pixels: int, max_elements: int = CHUNK_ELEMENTS,
           min_size: int = 1) -> Iterator[slice]:
    """Slices of ``range(num)`` of ``max(min_size, max_elements // pixels)`` items at most.

    With ``min_size=2`` no slice holds a single item unless ``num == 1`` (a left-over item
    joins the last slice): see :func:`row_sums`.
    """
    step = max(min_size, max_elements // max(pixels, 1))
    start = 0
    while start < num:
        end = min(num, start + step)
        if min_size > 1 and num - end == 1:
            end = num
        yield slice(start, end)
        start = end


def row_sums(x: Tensor, num_rows: int) -> Tensor:
    """``x.flatten(1).sum(1)`` rounded as when ``x`` is part of a tensor of ``num_rows`` rows.

    torch sums each row of a multi-row reduction in one thread, but splits a reduction with a
    single output across threads, which rounds differently: a lone row that mmdet's head summed
    among others is summed here as one of two.
    """
    x = x.flatten(1)
    if len(x) == 1 and num_rows > 1:
        return x.expand(2, -1).sum(1)[:1]
    return x.sum(1)


class EoMTFusionHead(MaskFormerFusionHead):
    """``MaskFormerFusionHead`` that resizes only the masks it keeps (see the module docstring).

    ``test_cfg`` keys and their meaning are mmdet's: ``panoptic_on``, ``instance_on``,
    ``object_mask_thr``, ``iou_thr``, ``filter_low_score``, ``max_per_image``.

    Args:
        chunk_elements: resize at most this many mask pixels at once (bounds the memory of a
            large image; the outputs do not depend on it).
    """

    def __init__(self, *args, chunk_elements: int = CHUNK_ELEMENTS, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk_elements = chunk_elements

    def predict(self, mask_cls_results: Tensor, mask_logits: Tensor,
                batch_data_samples: SampleList, batch_input_shape: Sequence[int] = None,
                rescale: bool = False, **kwargs) -> List[dict]:
        """Panoptic and/or instance results of a batch.

        Args:
            mask_cls_results: class logits ``(B, Q, C + 1)``.
            mask_logits: ``(B, Q, H_m, W_m)`` at the core's mask resolution (``H/4`` at patch
                16; not resized: unlike mmdet's
                head, this one resizes what it keeps).
            batch_data_samples: with ``img_shape`` and ``ori_shape``.
            batch_input_shape: ``(H, W)`` of the padded batch input the logits belong to.
            rescale: results at ``ori_shape`` (else at ``img_shape``).

        Returns:
            per image ``dict(pan_results=PixelData, ins_results=InstanceData)`` (the keys of
            the enabled tasks), as mmdet's head.
        """
        if batch_input_shape is None:
            raise ValueError('EoMTFusionHead.predict needs batch_input_shape, the (H, W) of the '
                             'padded input the mask logits belong to')
        results = []
        for cls_logits, logits, sample in zip(mask_cls_results, mask_logits,
                                              batch_data_samples):
            img_shape = tuple(sample.metainfo['img_shape'][:2])
            ori_shape = tuple(sample.metainfo['ori_shape'][:2]) if rescale else None
            out_shape = ori_shape or img_shape

            def resize(selected: Tensor) -> Tensor:
                return resize_mask_logits(selected, batch_input_shape, img_shape, ori_shape)

            result = dict()
            if self.test_cfg.get('panoptic_on', True):
                result['pan_results'] = self.panoptic_postprocess(cls_logits, logits, resize,
                                                                  out_shape)
            if self.test_cfg.get('instance_on', False):
                result['ins_results'] = self.instance_postprocess(cls_logits, logits, resize,
                                                                  out_shape)
            results.append(result)
        return results

    def panoptic_postprocess(self, cls_logits: Tensor, mask_logits: Tensor,
                             resize: Callable[[Tensor], Tensor],
                             out_shape: Tuple[int, int]) -> PixelData:
        """One image's panoptic segmentation.

        Args:
            cls_logits: ``(Q, C + 1)``.
            mask_logits: ``(Q, h, w)`` at the core's mask resolution.
            resize: mask logits ``(K, h, w)`` -> ``(K, *out_shape)``.
            out_shape: the output's ``(H, W)``.

        Returns:
            ``sem_seg`` ``(1, H, W)`` int32: ``class + instance_id * INSTANCE_OFFSET`` for
            things, ``class`` for stuff, ``num_classes`` for void.

        Every kept query ``k`` competes per pixel with ``score_k * sigmoid(mask_k)``; the
        winner map (first index on ties, as ``argmax``), the winner's sigmoid and each query's
        area of ``sigmoid >= 0.5`` are accumulated chunk by chunk, so memory stays
        ``O(chunk x pixels)``.  A query's segment is then decided from its areas, and the
        output is one table lookup per pixel.
        """
        object_mask_thr = self.test_cfg.get('object_mask_thr', 0.8)
        iou_thr = self.test_cfg.get('iou_thr', 0.8)
        filter_low_score = self.test_cfg.get('filter_low_score', False)
        void = self.num_classes

        scores, labels = F.softmax(cls_logits, dim=-1).max(-1)
        kept = (labels.ne(void) & (scores > object_mask_thr)).nonzero()[:, 0]
        if len(kept) == 0:
            return PixelData(sem_seg=torch.full((1, *out_shape), void, dtype=torch.int32,
                                                device=cls_logits.device))
        # Per pixel: the best score * sigmoid so far (every product is >= 0, so -1 lets the
        # first query win everywhere), its query (uint8 while the queries fit: a quarter of
        # int32's memory traffic) and whether its sigmoid is >= 0.5.  Each resized chunk is
        # consumed in strips of rows that stay in cache, updating these in place.
        height, width = out_shape
        best = torch.full(out_shape, -1.0, device=cls_logits.device)
        high = torch.zeros(out_shape, dtype=torch.bool, device=cls_logits.device)
        winner = torch.zeros(out_shape, device=cls_logits.device,
                             dtype=torch.uint8 if len(kept) <= 256 else torch.int32)
        original_areas = torch.zeros(len(kept), dtype=torch.long, device=cls_logits.device)
        # No float sums below: chunks and strips of any size give the same result.
        for part in chunks(len(kept), height * width, self.chunk_elements):
            queries = kept[part]
            part_scores = scores[queries].view(-1, 1, 1)
            logits = resize(mask_logits[queries])
            step = max(1, STRIP_ELEMENTS // (len(queries) * width))
            for top in range(0, height, step):
                rows = slice(top, top + step)
                products = logits[:, rows].sigmoid_()
                part_high = products >= 0.5
                original_areas[part] += torch.count_nonzero(part_high, dim=(1, 2))
                products.mul_(part_scores)
                best_rows, high_rows, winner_rows = best[rows], high[rows], winner[rows]
                # One query after the other, strictly greater: an earlier query keeps a tie, as
                # argmax does.  Blends by bitwise and integer arithmetic, not torch.where /
                # masked_fill (or a max over the queries): those branch per pixel on the CPU
                # and cost 10-50x more.
                for j in range(len(queries)):
                    better = products[j] > best_rows
                    worse = ~better
                    torch.maximum(best_rows, products[j], out=best_rows)
                    high_rows.bitwise_and_(worse).bitwise_or_(part_high[j].bitwise_and_(better))
                    winner_rows.mul_(worse).add_(better, alpha=part.start + j)
        winner = winner.int().flatten()
        mask_areas = torch.bincount(winner, minlength=len(kept)).tolist()
        original_areas = original_areas.tolist()

        # Segment id of each kept query's pixels: void for a query that does not survive.
        segment_ids = [void] * len(kept)
        instance_id = 1
        for k, pred_class in enumerate(labels[kept].tolist()):
            mask_area, original_area = mask_areas[k], original_areas[k]
            if mask_area == 0 or original_area == 0 or mask_area / original_area < iou_thr:
                continue
            if pred_class < self.num_things_classes:
                segment_ids[k] = pred_class + instance_id * INSTANCE_OFFSET
                instance_id += 1
            else:  # stuff regions of one class merge into one segment
                segment_ids[k] = pred_class
        panoptic_seg = torch.tensor(segment_ids, dtype=torch.int32,
                                    device=winner.device).index_select(0, winner)
        if filter_low_score:
            panoptic_seg.masked_fill_(~high.flatten(), void)
        return PixelData(sem_seg=panoptic_seg.view(1, *out_shape))

    def instance_postprocess(self, cls_logits: Tensor, mask_logits: Tensor,
                             resize: Callable[[Tensor], Tensor],
                             out_shape: Tuple[int, int]) -> InstanceData:
        """One image's instances: the top ``max_per_image`` (query, thing class) pairs.

        Args:
            cls_logits: ``(Q, C + 1)``.
            mask_logits: ``(Q, h, w)`` at the core's mask resolution.
            resize: mask logits ``(K, h, w)`` -> ``(K, *out_shape)``.
            out_shape: the output's ``(H, W)``.

        Returns:
            ``masks`` ``(N, H, W)`` bool (``logit > 0``), ``labels`` ``(N,)``, ``scores``
            ``(N,)`` = class score * mean sigmoid inside the mask, ``bboxes`` ``(N, 4)``; pairs
            in the order of mmdet's head (``topk(sorted=False)``, things only).  Each distinct
            query's mask is resized once, however many pairs use it.
        """
        max_per_image = self.test_cfg.get('max_per_image', 100)
        num_queries = cls_logits.shape[0]
        scores = F.softmax(cls_logits, dim=-1)[:, :-1]
        labels = torch.arange(self.num_classes, device=cls_logits.device).repeat(num_queries)
        pair_scores, top_indices = scores.flatten(0, 1).topk(max_per_image, sorted=False)
        pair_labels = labels[top_indices]
        is_thing = pair_labels < self.num_things_classes
        pair_scores, pair_labels = pair_scores[is_thing], pair_labels[is_thing]
        queries, pair_query = torch.unique(top_indices[is_thing] // self.num_classes,
                                           return_inverse=True)

        masks = torch.empty((len(pair_query), *out_shape), dtype=torch.bool,
                            device=cls_logits.device)
        bboxes = masks.new_empty((len(pair_query), 4), dtype=torch.float32)
        inside, areas = [], []
        for part in chunks(len(queries), out_shape[0] * out_shape[1], self.chunk_elements,
                           min_size=2):
            logits = resize(mask_logits[queries[part]])
            positive = logits > 0
            binary = positive.float()
            areas.append(row_sums(binary, len(pair_query)))
            # In place: a fresh (K, H, W) product costs page faults on a large image.
            inside.append(row_sums(logits.sigmoid_().mul_(binary), len(pair_query)))
            # Write the pairs of this chunk's queries straight into the output.
            pairs = ((pair_query >= part.start) & (pair_query < part.stop)).nonzero()[:, 0]
            masks[pairs] = positive[pair_query[pairs] - part.start]
            bboxes[pairs] = mask2bbox(positive)[pair_query[pairs] - part.start]
        if inside:
            mask_scores = torch.cat(inside)[pair_query] / (torch.cat(areas)[pair_query] + 1e-6)
        else:
            mask_scores = pair_scores.new_zeros(0)

        results = InstanceData()
        results.bboxes = bboxes
        results.labels = pair_labels
        results.scores = pair_scores * mask_scores
        results.masks = masks
        return results
