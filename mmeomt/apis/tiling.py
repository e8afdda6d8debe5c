"""Tiled inference of panoptic and instance models on images larger than their crop.

EoMT's panoptic and instance test pipelines fit the whole image into one crop (long side =
crop, docs/method.md §6): a 6000 x 4000 photo is segmented at a tenth of its resolution and
its small objects are lost.  :class:`TiledPredictor` segments such an image at its own
resolution, one crop-sized tile at a time, and merges the tiles' results into the prediction
whole-image inference would return (``pred_panoptic_seg`` and/or ``pred_instances`` at the
original size), so visualisation and the demo work unchanged.  ``EoMTInferencer(...)(images,
tiled=True, tile_overlap=0.25)`` and ``demo/image_demo.py --tiled`` use it.

Tiles
    Of the crop size ``(h, w)``: the ``Pad`` size of the config's test pipeline, else the
    backbone's ``img_size`` (:func:`crop_size_from_config`).  Along each side a tile starts
    every ``crop - round(crop * overlap)`` pixels and the last one is aligned to the border
    (:func:`tile_starts`); a side no longer than the crop is one tile of its own length.  An
    image that fits in one tile is segmented whole: that *is* whole-image inference (the same
    pipeline, model and outputs).  ``overlap`` is the fraction of a tile shared with its
    neighbour, in ``[0, 1)``; with 0 the tiles only touch (except the border-aligned last
    one), so objects cut by a tile border stay cut: merging needs a shared region.
Model
    Each tile is an image for the inferencer's own test pipeline and model (its ``preprocess``
    and ``forward``: the detector's ``predict`` and ``EoMTFusionHead``, no post-processing of
    our own), in batches of ``batch_size`` tiles.  The test pipeline fits an image into the
    crop; a crop-sized tile already fits, so it keeps its native resolution (a tile shorter
    than the crop along one side is padded there, as any image).  A pipeline that resizes a
    tile all the same is refused with an error.
Instances
    Every tile's instances with a non-empty mask are *pieces*.  For two tiles that share a
    region ``R``, pieces of the same class are matched one to one, greedily by decreasing IoU
    *inside R* (the only pixels both tiles see), when that IoU is at least ``iou_thr``
    (default 0.5).  Matches chain across tiles (an object spanning four tiles is matched
    pairwise), and each chain is one instance: its mask is the union of its pieces, its box
    the box of that union, its score the *area-weighted* mean of its pieces' scores (a piece
    that sees more of the object counts more; for one piece it is that piece's score).  Mask
    containment is not a criterion: low-scoring instances with large masks would swallow the
    objects they contain.  The one-to-one matching keeps duplicates that a tile itself
    predicts (as whole-image inference keeps them) while an object seen by several tiles
    counts once.  The instances are returned by decreasing score, the top
    ``test_cfg.max_per_image`` of them.
Panoptic
    Thing segments are matched across tiles as instances are (same class, IoU inside the
    shared region, one to one) and each chain gets one instance id; stuff segments of a class
    are one segment over the whole image.  Every output pixel takes the segment of the tile
    *whose centre is nearest* among the tiles that predict a segment there (ties: the earlier
    tile in raster order), and is void only where no tile predicts one.  Tile-centre
    ownership needs no per-segment confidence (the fusion head returns none) and gives each
    pixel the tile with the most context around it.  Encoding as mmdet's: ``class +
    instance_id * INSTANCE_OFFSET`` for things, ``class`` for stuff, ``num_classes`` for void.
Memory
    What outlives a tile is small: each instance piece as the boolean crop of its mask's
    tight box (``O(sum of piece box areas)``), each panoptic tile as its int32 id map (about
    ``4 * pixels / (1 - overlap)^2`` bytes).  The full-size outputs are what whole-image
    inference returns too: ``(N, H, W)`` bool masks of the kept instances, one ``(H, W)``
    int32 panoptic map (and, while stitching, one int32 distance map).  No float tensor of the
    full image is made.
Cost
    About one crop-sized whole-image inference per tile; the merging is a few percent of it
    (README, "Tiled vs whole image").  Semantic models are not tiled: their inference already
    slides crop-sized windows along the image (``EoMTInferencer`` refuses ``tiled`` for them).
"""
from collections import deque
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData, PixelData
from torch import Tensor

# (y0, x0, y1, x1) in image pixels, ends exclusive.
Box = Tuple[int, int, int, int]
DEFAULT_OVERLAP = 0.25
DEFAULT_IOU_THR = 0.5


def check_overlap(overlap) -> float:
    """``overlap`` as a float, or a ``ValueError`` saying what is expected."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) \
            or not 0 <= overlap < 1:
        raise ValueError(f'tile_overlap must be a number in [0, 1) (the fraction of a tile '
                         f'shared with its neighbour), got {overlap!r}')
    return float(overlap)


def tile_starts(length: int, tile: int, overlap: float) -> List[int]:
    """Starts of the tiles along a side of ``length`` pixels.

    Every ``tile - round(tile * overlap)`` pixels (at least 1), and a last tile aligned to the
    border, ``length - tile``; ``[0]`` when the side is no longer than a tile.
    """
    if length <= tile:
        return [0]
    stride = max(1, tile - round(tile * overlap))
    return list(range(0, length - tile, stride)) + [length - tile]


def tile_boxes(image_shape: Sequence[int], tile_shape: Sequence[int],
               overlap: float) -> List[Box]:
    """Tiles covering an ``(H, W)`` image, row by row: ``(y0, x0, y1, x1)`` each."""
    (height, width), (tile_h, tile_w) = image_shape[:2], tile_shape
    return [(y, x, min(y + tile_h, height), min(x + tile_w, width))
            for y in tile_starts(height, tile_h, overlap)
            for x in tile_starts(width, tile_w, overlap)]


def _transform_name(transform: dict) -> str:
    name = transform.get('type', '')
    return name.split('.')[-1] if isinstance(name, str) else getattr(name, '__name__', '')


def _hw(size, field: str) -> Tuple[int, int]:
    """``(h, w)`` of an int or an mmcv ``(w, h)`` size."""
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(s, int) and s > 0 for s in size):
        return int(size[1]), int(size[0])
    raise ValueError(f'{field}: expected a positive int or (w, h), got {size!r}')


def crop_size_from_config(cfg) -> Tuple[int, int]:
    """The model's crop ``(h, w)``: the test pipeline's ``Pad`` size, else the backbone's.

    The published test pipelines pad to the crop (``Pad(size=crop_size)``, mmcv's ``(w, h)``,
    also inside a ``KeyMapper``); without a fixed ``Pad`` size, ``model.eomt.backbone.img_size``
    (the crop the position embeddings were trained at, ``(h, w)`` or an int).
    """
    def pad_sizes(transforms) -> Iterator:
        for transform in transforms or []:
            if _transform_name(transform) == 'Pad' and transform.get('size') is not None:
                yield transform['size']
            yield from pad_sizes(transform.get('transforms'))

    pipeline = cfg.test_dataloader.dataset.pipeline
    for size in pad_sizes(pipeline):
        return _hw(size, 'test_dataloader.dataset.pipeline: Pad.size')
    img_size = cfg.get('model', {}).get('eomt', {}).get('backbone', {}).get('img_size')
    if img_size is None:
        raise ValueError('tiled inference needs the crop size: the config has neither a Pad '
                         'with a fixed size in test_dataloader.dataset.pipeline nor '
                         'model.eomt.backbone.img_size; pass tile_size=(h, w)')
    if isinstance(img_size, int):
        return img_size, img_size
    return _hw(tuple(img_size)[::-1], 'model.eomt.backbone.img_size')


def _intersection(a: Box, b: Box) -> Optional[Box]:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def _greedy_matches(iou: Tensor, iou_thr: float) -> List[Tuple[int, int]]:
    """One-to-one ``(row, column)`` matches of an IoU matrix, best first, IoU >= ``iou_thr``."""
    rows, cols = ((iou >= iou_thr) & (iou > 0)).nonzero(as_tuple=True)
    order = iou[rows, cols].argsort(descending=True, stable=True)
    used_rows, used_cols, matches = set(), set(), []
    for row, col in zip(rows[order].tolist(), cols[order].tolist()):
        if row not in used_rows and col not in used_cols:
            used_rows.add(row)
            used_cols.add(col)
            matches.append((row, col))
    return matches


class _DisjointSets:
    """Union-find over ``0 .. n-1``; each set is represented by its smallest member."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        i, j = self.find(i), self.find(j)
        if i != j:
            self.parent[max(i, j)] = min(i, j)

    def groups(self) -> List[List[int]]:
        """The sets, ordered by their smallest member; members in increasing order."""
        groups: Dict[int, List[int]] = {}
        for i in range(len(self.parent)):
            groups.setdefault(self.find(i), []).append(i)
        return list(groups.values())


class InstancePieces:
    """Every tile's instances with a non-empty mask, as tight boolean crops in image pixels.

    Attributes:
        tiles, labels, scores, areas: one per piece.
        boxes: ``(y0, x0, y1, x1)`` of each piece's mask in the image, ends exclusive.
        crops: ``(y1 - y0, x1 - x0)`` bool mask of each piece inside its box.
    """

    def __init__(self) -> None:
        self.tiles: List[int] = []
        self.labels: List[int] = []
        self.scores: List[float] = []
        self.areas: List[int] = []
        self.boxes: List[Box] = []
        self.crops: List[Tensor] = []

    def add(self, tile: int, tile_box: Box, instances: InstanceData) -> None:
        """Add one tile's ``pred_instances``: ``masks`` ``(N, h, w)`` at the tile's size and
        ``bboxes`` ``(N, 4)``, the masks' tight boxes ``(x0, y0, x1, y1)`` with exclusive ends
        (mmdet's ``mask2bbox``, which the fusion head uses; all 0 for an empty mask).

        The boxes save a pass over the ``(N, h, w)`` masks (reducing them along the rows takes
        seconds on a CPU for 100 masks of 640 x 640).
        """
        masks = instances.masks
        height, width = masks.shape[-2:]
        bboxes = instances.bboxes.round().long()
        bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, width)
        bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, height)
        labels = instances.labels.tolist()
        scores = instances.scores.float().tolist()
        y0, x0 = tile_box[:2]
        for i, (left, top, right, bottom) in enumerate(bboxes.tolist()):
            if right <= left or bottom <= top:
                continue  # an empty mask
            # A copy: the tile's full (N, h, w) masks are freed with its data sample.
            crop = masks[i, top:bottom, left:right].bool().clone()
            area = int(torch.count_nonzero(crop))
            if area == 0:
                continue
            self.tiles.append(tile)
            self.labels.append(labels[i])
            self.scores.append(scores[i])
            self.areas.append(area)
            self.boxes.append((y0 + top, x0 + left, y0 + bottom, x0 + right))
            self.crops.append(crop)

    def paste(self, pieces: Sequence[int], region: Box) -> Tensor:
        """``(len(pieces), h, w)`` bool: the pieces' masks inside ``region``."""
        y0, x0, y1, x1 = region
        device = self.crops[pieces[0]].device if pieces else None
        out = torch.zeros((len(pieces), y1 - y0, x1 - x0), dtype=torch.bool, device=device)
        for k, p in enumerate(pieces):
            box = _intersection(self.boxes[p], region)
            if box is not None:
                py0, px0 = self.boxes[p][:2]
                out[k, box[0] - y0:box[2] - y0, box[1] - x0:box[3] - x0] = \
                    self.crops[p][box[0] - py0:box[2] - py0, box[1] - px0:box[3] - px0]
        return out


def match_instance_pieces(pieces: InstancePieces, boxes: Sequence[Box],
                          iou_thr: float) -> List[List[int]]:
    """Chains of pieces that are one instance (see the module docstring), each a list of piece
    indices, ordered by their first piece."""
    sets = _DisjointSets(len(pieces.labels))
    by_tile: Dict[int, List[int]] = {}
    for p, tile in enumerate(pieces.tiles):
        by_tile.setdefault(tile, []).append(p)
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            shared = _intersection(boxes[a], boxes[b])
            if shared is None:
                continue
            in_a = [p for p in by_tile.get(a, []) if _intersection(pieces.boxes[p], shared)]
            in_b = [p for p in by_tile.get(b, []) if _intersection(pieces.boxes[p], shared)]
            for label in {pieces.labels[p] for p in in_a} & {pieces.labels[p] for p in in_b}:
                side_a = [p for p in in_a if pieces.labels[p] == label]
                side_b = [p for p in in_b if pieces.labels[p] == label]
                # Pixel counts inside the shared region: sums of 0/1 products, exact in
                # float32 (and TF32) below 2^24 pixels.
                masks_a = pieces.paste(side_a, shared).flatten(1).float()
                masks_b = pieces.paste(side_b, shared).flatten(1).float()
                inter = masks_a @ masks_b.T
                union = masks_a.sum(1)[:, None] + masks_b.sum(1)[None] - inter
                for i, j in _greedy_matches(inter / union.clamp(min=1), iou_thr):
                    sets.union(side_a[i], side_b[j])
    return sets.groups()


def merge_instances(pieces: InstancePieces, boxes: Sequence[Box],
                    image_shape: Tuple[int, int], iou_thr: float = DEFAULT_IOU_THR,
                    max_per_image: int = 100, device=None) -> InstanceData:
    """The image's instances from its tiles' pieces.

    Args:
        pieces: every tile's instances.
        boxes: per tile, its ``(y0, x0, y1, x1)`` in the image.
        image_shape: ``(H, W)``.
        iou_thr: IoU inside a shared region from which two pieces of a class are one.
        max_per_image: instances kept, the highest-scoring.
        device: of the outputs (default: the pieces').

    Returns:
        ``bboxes`` ``(N, 4)`` float32 ``(x0, y0, x1, y1)`` (ends exclusive, as mmdet's
        ``mask2bbox``), ``labels`` ``(N,)`` int64, ``scores`` ``(N,)`` float32 (area-weighted
        mean of the pieces'), ``masks`` ``(N, H, W)`` bool (union of the pieces); by
        decreasing score, ``N <= max_per_image``.
    """
    groups = match_instance_pieces(pieces, boxes, iou_thr)
    areas = [sum(pieces.areas[p] for p in group) for group in groups]
    scores = [sum(pieces.scores[p] * pieces.areas[p] for p in group) / area
              for group, area in zip(groups, areas)]
    order = sorted(range(len(groups)), key=lambda g: -scores[g])[:max_per_image]
    if device is None:
        device = pieces.crops[0].device if pieces.crops else 'cpu'
    masks = torch.zeros((len(order), *image_shape), dtype=torch.bool, device=device)
    bboxes = []
    for k, g in enumerate(order):
        for p in groups[g]:
            y0, x0, y1, x1 = pieces.boxes[p]
            masks[k, y0:y1, x0:x1] |= pieces.crops[p]
        # The pieces' boxes are tight, so the box of the union is the union of the boxes.
        piece_boxes = [pieces.boxes[p] for p in groups[g]]
        bboxes.append([min(b[1] for b in piece_boxes), min(b[0] for b in piece_boxes),
                       max(b[3] for b in piece_boxes), max(b[2] for b in piece_boxes)])
    results = InstanceData()
    results.bboxes = torch.tensor(bboxes, dtype=torch.float32, device=device).view(-1, 4)
    results.labels = torch.tensor([pieces.labels[groups[g][0]] for g in order],
                                  dtype=torch.long, device=device)
    results.scores = torch.tensor([scores[g] for g in order], dtype=torch.float32,
                                  device=device)
    results.masks = masks
    return results


def merge_panoptic(tile_maps: Sequence[Tensor], boxes: Sequence[Box],
                   image_shape: Tuple[int, int], num_classes: int,
                   iou_thr: float = DEFAULT_IOU_THR) -> PixelData:
    """The image's panoptic segmentation from its tiles' (see the module docstring).

    Args:
        tile_maps: per tile, its ``(h, w)`` map in mmdet's encoding (the tile's
            ``pred_panoptic_seg.sem_seg[0]``).
        boxes: per tile, its ``(y0, x0, y1, x1)`` in the image.
        image_shape: ``(H, W)``.
        num_classes: things + stuff; also the void label.

    Returns:
        ``sem_seg`` ``(1, H, W)`` int32: ``class + instance_id * INSTANCE_OFFSET`` for things
        (ids from 1, one per chain of matched tile segments), ``class`` for stuff,
        ``num_classes`` for void.
    """
    void = num_classes
    # Thing segments (ids >= INSTANCE_OFFSET) of every tile are the nodes to chain.
    nodes: List[Dict[int, int]] = []
    count = 0
    for tile_map in tile_maps:
        ids = torch.unique(tile_map)
        things = ids[ids >= INSTANCE_OFFSET].tolist()
        nodes.append({segment: count + k for k, segment in enumerate(things)})
        count += len(things)
    sets = _DisjointSets(count)
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            shared = _intersection(boxes[a], boxes[b])
            if shared is None or not nodes[a] or not nodes[b]:
                continue
            map_a = _crop(tile_maps[a], boxes[a], shared).flatten()
            map_b = _crop(tile_maps[b], boxes[b], shared).flatten()
            ids_a, area_a = torch.unique(map_a[map_a >= INSTANCE_OFFSET], return_counts=True)
            ids_b, area_b = torch.unique(map_b[map_b >= INSTANCE_OFFSET], return_counts=True)
            both = (map_a >= INSTANCE_OFFSET) & (map_b >= INSTANCE_OFFSET) & (
                map_a % INSTANCE_OFFSET == map_b % INSTANCE_OFFSET)  # the same class
            if not both.any():
                continue
            pairs, inter = torch.unique(torch.stack([map_a[both], map_b[both]]), dim=1,
                                        return_counts=True)
            rows = torch.searchsorted(ids_a, pairs[0].contiguous())
            cols = torch.searchsorted(ids_b, pairs[1].contiguous())
            iou = torch.zeros((len(ids_a), len(ids_b)), device=map_a.device)
            iou[rows, cols] = (inter / (area_a[rows] + area_b[cols] - inter)).float()
            ids_a, ids_b = ids_a.tolist(), ids_b.tolist()
            for i, j in _greedy_matches(iou, iou_thr):
                sets.union(nodes[a][ids_a[i]], nodes[b][ids_b[j]])
    instance_ids = [0] * count
    for instance_id, group in enumerate(sets.groups(), start=1):
        for node in group:
            instance_ids[node] = instance_id

    device = tile_maps[0].device
    panoptic = torch.full(image_shape, void, dtype=torch.int32, device=device)
    # Squared distance (in half pixels, to stay integral) to the centre of the tile that
    # set each pixel; int32 max where none has.
    nearest = torch.full(image_shape, torch.iinfo(torch.int32).max, dtype=torch.int32,
                         device=device)
    for tile_map, (y0, x0, y1, x1), tile_nodes in zip(tile_maps, boxes, nodes):
        ids, inverse = torch.unique(tile_map, return_inverse=True)
        values = torch.tensor(
            [i if i < INSTANCE_OFFSET else
             i % INSTANCE_OFFSET + instance_ids[tile_nodes[i]] * INSTANCE_OFFSET
             for i in ids.tolist()], dtype=torch.int32, device=device)
        dy = (2 * torch.arange(y0, y1, device=device, dtype=torch.int32) - (y0 + y1 - 1))**2
        dx = (2 * torch.arange(x0, x1, device=device, dtype=torch.int32) - (x0 + x1 - 1))**2
        distance = dy[:, None] + dx[None]
        region, region_nearest = panoptic[y0:y1, x0:x1], nearest[y0:y1, x0:x1]
        better = (tile_map != void) & (distance < region_nearest)
        region.copy_(torch.where(better, values[inverse], region))
        region_nearest.copy_(torch.where(better, distance, region_nearest))
    return PixelData(sem_seg=panoptic[None])


def _crop(tile_map: Tensor, tile_box: Box, region: Box) -> Tensor:
    y0, x0 = tile_box[:2]
    return tile_map[region[0] - y0:region[2] - y0, region[1] - x0:region[3] - x0]


class _ImageTiles:
    """What is kept of one image's tiles until its last tile is predicted."""

    def __init__(self, item, image_shape: Tuple[int, int], boxes: List[Box]):
        self.item, self.image_shape, self.boxes = item, image_shape, boxes
        self.pieces = InstancePieces()
        self.maps: Dict[int, Tensor] = {}
        self.done = 0
        # The device of the tiles' instances (the model's), for the merged ones.
        self.instances_device = None


class TiledPredictor:
    """Tiled inference with an mmdet-scope EoMT inferencer (see the module docstring).

    Args:
        inferencer: an :class:`~mmeomt.apis.EoMTDetInferencer` (its ``pipeline``,
            ``preprocess``, ``forward``, ``model`` and ``cfg`` are used).
        overlap: fraction of a tile shared with each neighbour, in ``[0, 1)``.
        iou_thr: IoU inside the shared region from which two tiles' segments of a class are
            one, in ``(0, 1]``.
        tile_size: ``(h, w)``; default: the model's crop (:func:`crop_size_from_config`).
    """

    def __init__(self, inferencer, overlap: float = DEFAULT_OVERLAP,
                 iou_thr: float = DEFAULT_IOU_THR,
                 tile_size: Optional[Union[int, Sequence[int]]] = None) -> None:
        self.inferencer = inferencer
        self.overlap = check_overlap(overlap)
        if isinstance(iou_thr, bool) or not isinstance(iou_thr, (int, float)) \
                or not 0 < iou_thr <= 1:
            raise ValueError(f'TiledPredictor: iou_thr must be in (0, 1], got {iou_thr!r}')
        self.iou_thr = float(iou_thr)
        if tile_size is None:
            tile_size = crop_size_from_config(inferencer.cfg)
        elif isinstance(tile_size, int):
            tile_size = (tile_size, tile_size)
        tile_size = tuple(tile_size)
        if len(tile_size) != 2 or not all(isinstance(s, int) and s > 0 for s in tile_size):
            raise ValueError(f'TiledPredictor: tile_size must be a positive int or (h, w), '
                             f'got {tile_size!r}')
        self.tile_size = tile_size
        model = inferencer.model
        self.num_classes = model.num_classes
        self.max_per_image = model.test_cfg.get('max_per_image', 100)

    def load(self, item: Union[str, np.ndarray]) -> np.ndarray:
        """The image as the test pipeline's loading transform decodes it (BGR arrays as they
        are: :func:`mmeomt.apis.inputs.prepare_inputs` has made them so)."""
        if isinstance(item, np.ndarray):
            return item
        # mmdet's DetInferencer turns the config's LoadImageFromFile into an InferencerLoader.
        loader = next((t for t in self.inferencer.pipeline.transforms
                       if hasattr(t, 'from_file')), None)
        if loader is None:
            raise TypeError('TiledPredictor: the inference pipeline has no image loader '
                            "(mmdet's InferencerLoader); the config's test pipeline must "
                            'start with LoadImageFromFile')
        return loader.from_file(dict(img_path=item))['img']

    def __call__(self, inputs: Sequence[Union[str, np.ndarray]],
                 batch_size: int = 1) -> List[DetDataSample]:
        """Predictions of ``inputs`` (paths or BGR arrays), one ``DetDataSample`` each, in
        order; ``metainfo['tiles']`` lists the tile boxes ``(y0, x0, y1, x1)``."""
        images: Dict[int, _ImageTiles] = {}
        # (image index, tile index) of every pipeline input, in the order they are made.
        jobs = deque()

        def pipeline_inputs():
            for index, item in enumerate(inputs):
                image = self.load(item)
                boxes = tile_boxes(image.shape[:2], self.tile_size, self.overlap)
                images[index] = _ImageTiles(item, tuple(image.shape[:2]), boxes)
                if len(boxes) == 1:  # fits one tile: whole-image inference
                    jobs.append((index, None))
                    yield image
                    continue
                for tile, (y0, x0, y1, x1) in enumerate(boxes):
                    jobs.append((index, tile))
                    yield np.ascontiguousarray(image[y0:y1, x0:x1])
                del image

        results: Dict[int, DetDataSample] = {}
        for data in self.inferencer.preprocess(pipeline_inputs(), batch_size=batch_size):
            for sample in self.inferencer.forward(data[1]):  # mmdet: (inputs, data)
                index, tile = jobs.popleft()
                state = images[index]
                if tile is None:
                    if isinstance(state.item, str):
                        sample.set_metainfo(dict(img_path=state.item))
                    sample.set_metainfo(dict(tiles=state.boxes))
                    results[index] = sample
                    del images[index]
                    continue
                self._add_tile(state, tile, sample)
                if state.done == len(state.boxes):
                    results[index] = self._merge(state)
                    del images[index]
        return [results[i] for i in range(len(inputs))]

    def _add_tile(self, state: _ImageTiles, tile: int, sample: DetDataSample) -> None:
        y0, x0, y1, x1 = state.boxes[tile]
        img_shape = tuple(sample.metainfo['img_shape'][:2])
        if img_shape != (y1 - y0, x1 - x0):
            raise ValueError(
                f'tiled inference: the test pipeline (test_dataloader.dataset.pipeline) '
                f'resized a {y1 - y0}x{x1 - x0} tile to {img_shape[0]}x{img_shape[1]}; tiles '
                f'are crop-sized ({self.tile_size[0]}x{self.tile_size[1]}) so that they keep '
                f'their resolution: the pipeline must fit images into that crop (Resize '
                f'keep_ratio to the crop, Pad to it), or pass a tile_size it leaves alone')
        if 'pred_instances' in sample:
            state.instances_device = sample.pred_instances.masks.device
            state.pieces.add(tile, state.boxes[tile], sample.pred_instances)
        if 'pred_panoptic_seg' in sample:
            state.maps[tile] = sample.pred_panoptic_seg.sem_seg[0]
        state.done += 1

    def _merge(self, state: _ImageTiles) -> DetDataSample:
        height, width = state.image_shape
        sample = DetDataSample(metainfo=dict(
            ori_shape=(height, width), img_shape=(height, width), scale_factor=(1.0, 1.0),
            tiles=state.boxes))
        if isinstance(state.item, str):
            sample.set_metainfo(dict(img_path=state.item))
        if state.maps:
            sample.pred_panoptic_seg = merge_panoptic(
                [state.maps[t] for t in range(len(state.boxes))], state.boxes,
                state.image_shape, self.num_classes, self.iou_thr)
        if state.instances_device is not None:
            sample.pred_instances = merge_instances(
                state.pieces, state.boxes, state.image_shape, self.iou_thr,
                self.max_per_image, device=state.instances_device)
        return sample


__all__ = ['TiledPredictor', 'InstancePieces', 'merge_instances', 'merge_panoptic',
           'match_instance_pieces', 'tile_starts', 'tile_boxes', 'crop_size_from_config',
           'check_overlap', 'DEFAULT_OVERLAP', 'DEFAULT_IOU_THR']
