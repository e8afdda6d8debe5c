"""A small synthetic segmentation dataset, so that EoMT can be seen learning without COCO or ADE20K.

One set of scenes is written in the three formats the real configs read:

* COCO panoptic (``coco/annotations/panoptic_{train,val}2017.json`` + PNGs whose RGB encodes the
  segment id as ``R + 256 * G + 256**2 * B``), for mmdet's ``CocoPanopticDataset``;
* COCO instance (``coco/annotations/instances_{train,val}2017.json``, masks as compressed RLE,
  a few ``iscrowd=1`` groups), for mmdet's ``CocoDataset``;
* ADE20K-style semantic maps (``ade/annotations/{training,validation}/*.png``, 0 = unlabelled,
  ``1..K`` = classes, i.e. ``reduce_zero_label=True``), for mmseg's ``BaseSegDataset``.

A scene is a background split into up to three textured *stuff* regions (stripes, checker,
noise) by smooth random boundaries, an optional unlabelled clutter blob (void), an optional crowd
(a tight group of small shapes of one class, labelled as one ``iscrowd`` region) and one to eight
*thing* instances: shaded shapes whose class is their outline (circle, square, triangle, star,
cross), with random size, rotation, position and colour.  Each class draws its colours from its
own family (a band of hues; vivid for things, muted for the stuff textures), so that colour is a
second, easier cue beside shape: with shape alone, a ViT-T trained from scratch for the demo's
8 minutes on 2 CPU cores stayed near chance (PQ <= 12.4); with the colour families it passes the
demo's targets.  The bands of neighbouring classes nearly meet (circle and square touch), so
colour is a strong cue but not always a sufficient one.  Later instances are drawn over earlier
ones, so instances touch and occlude; a placement that would hide most of an earlier instance is
retried elsewhere.  Edges are anti-aliased; a pixel belongs to the top-most shape covering at
least half of it.

Every image is drawn from its own ``numpy`` generator seeded by ``(seed, split, index)``, so a
seed fixes every byte, and a larger ``num_train`` keeps the first images unchanged.  The dataset
is written into a temporary sibling directory which is renamed into place only when complete,
with ``manifest.json`` (parameters + generator version) last; a second call with the same
parameters finds the manifest and returns at once.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass
from io import BytesIO
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# Bump whenever a change alters any written byte: the manifest check then regenerates old data.
GENERATOR_VERSION = 3

THING_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
STUFF_CLASSES = ('stripes', 'checker', 'noise')
CLASSES = THING_CLASSES + STUFF_CLASSES
# Category id of CLASSES[i] in the COCO files and its label value in the semantic PNGs: i + 1.
CATEGORY_IDS = tuple(range(1, len(CLASSES) + 1))
PALETTE = ((220, 20, 60), (0, 130, 230), (250, 170, 30), (150, 60, 220), (20, 190, 80),
           (120, 120, 120), (170, 120, 60), (90, 190, 190))
SPLITS = ('train', 'val')
# Directory names of each split in the two layouts.
COCO_SPLIT_DIRS = {'train': 'train2017', 'val': 'val2017'}
ADE_SPLIT_DIRS = {'train': 'training', 'val': 'validation'}
# Scene parameters (changing one changes the data: bump GENERATOR_VERSION).
IMG_SIZE_RANGE = (160, 256)     # height and width drawn independently, inclusive
NUM_THINGS_RANGE = (1, 8)       # per image, inclusive
MIN_THING_RADIUS_FRAC = 0.09    # size is log-uniform between these fractions of the short side
MAX_THING_RADIUS_FRAC = 0.3
MIN_VISIBLE_FRAC = 0.4          # an instance keeps >= this fraction of its in-frame area
MIN_SEGMENT_AREA = 40           # px
CROWD_PROB = 0.12
VOID_PROB = 0.3
# OpenCV hue (0-180) at the centre of each class's colour family, and the half-width of the band.
THING_HUES = (0, 28, 60, 105, 145)
STUFF_HUES = (15, 90, 165)
HUE_JITTER = 14
JPEG_QUALITY = 92
SUPERSAMPLE = 4                 # anti-aliasing factor for shape edges


@dataclass
class Segment:
    """One panoptic segment of a scene.

    Attributes:
        category_id (int): COCO category id (``CLASSES[category_id - 1]``).
        mask (np.ndarray): ``(H, W)`` bool, the visible pixels; segments never overlap.
        iscrowd (bool): a group of things of one class labelled as a single region.
    """
    category_id: int
    mask: np.ndarray
    iscrowd: bool = False

    @property
    def isthing(self) -> bool:
        return self.category_id <= len(THING_CLASSES)


@dataclass
class Scene:
    """A rendered scene: ``image`` ``(H, W, 3)`` uint8 RGB and its non-overlapping ``segments``
    (things in drawing order, then stuff); pixels in no segment are void."""
    image: np.ndarray
    segments: List[Segment]

    def panoptic_ids(self) -> Tuple[np.ndarray, List[int]]:
        """Segment id map ``(H, W)`` int64 (0 = void) and the id of each segment.

        Ids are ``category_id * 1000 + k`` (``k`` counts the segments of a category), readable
        when debugging and unique within the image, which is all COCO panoptic asks.
        """
        ids = np.zeros(self.image.shape[:2], np.int64)
        seg_ids, counts = [], {}
        for seg in self.segments:
            counts[seg.category_id] = counts.get(seg.category_id, 0) + 1
            seg_id = seg.category_id * 1000 + counts[seg.category_id]
            ids[seg.mask] = seg_id
            seg_ids.append(seg_id)
        return ids, seg_ids

    def semantic_map(self) -> np.ndarray:
        """``(H, W)`` uint8: 0 = void, ``category_id`` elsewhere (crowds keep their class)."""
        sem = np.zeros(self.image.shape[:2], np.uint8)
        for seg in self.segments:
            sem[seg.mask] = seg.category_id
        return sem


# ---------------------------------------------------------------------------------------------
# Rendering


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """``(H, W)`` float32 noise, ~N(0, 1) on a grid of ``cell`` px, bilinearly interpolated."""
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _random_colour(rng: np.random.Generator, hue: float, sat: Tuple[float, float],
                   val: Tuple[float, float]) -> np.ndarray:
    """An RGB colour (3,) float32 in [0, 255]: hue within HUE_JITTER of ``hue`` (OpenCV's 0-180
    scale), saturation and value uniform in the given ranges (fractions)."""
    h = (hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 180
    hsv = np.array([[[h, rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _stuff_texture(rng: np.random.Generator, stuff: int, h: int, w: int) -> np.ndarray:
    """``(H, W, 3)`` float32 texture of stuff class ``stuff`` (index into STUFF_CLASSES).

    Two muted tones of the class's colour family are mixed by a class-specific pattern with
    random scale and orientation.
    """
    hue = STUFF_HUES[stuff]
    c1 = _random_colour(rng, hue, (0.1, 0.35), (0.3, 0.9))
    c2 = _random_colour(rng, hue, (0.1, 0.35), (0.3, 0.9))
    # Keep the two tones apart so that the pattern is visible.
    while np.abs(c1 - c2).sum() < 90:
        c2 = _random_colour(rng, hue, (0.1, 0.35), (0.3, 0.9))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    name = STUFF_CLASSES[stuff]
    if name == 'stripes':
        period = rng.uniform(7, 16)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    elif name == 'checker':
        cell = rng.uniform(5, 10)
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
        t = 0.15 + 0.7 * t
    elif name == 'noise':
        t = _smooth_noise(rng, h, w, rng.uniform(4, 9)) + 0.5 * _smooth_noise(rng, h, w, 2.0)
        t = np.clip(0.5 + 0.35 * t, 0, 1)
    else:
        raise ValueError(f'unknown stuff class {name!r}; expected one of {STUFF_CLASSES}')
    return c1 * (1 - t[..., None]) + c2 * t[..., None]


def _stuff_layout(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, List[int]]:
    """Split the image into 1-3 stuff regions with smooth random boundaries.

    Returns:
        region (np.ndarray): ``(H, W)`` int64 region index.
        classes (List[int]): the stuff class (index into STUFF_CLASSES) of each region; two
            regions may share a class (they then form one panoptic segment, as in COCO).
    """
    num = int(rng.choice([1, 2, 3], p=[0.2, 0.45, 0.35]))
    classes = [int(c) for c in rng.integers(0, len(STUFF_CLASSES), num)]
    cell = rng.uniform(0.3, 0.6) * min(h, w)
    fields = np.stack([_smooth_noise(rng, h, w, cell) for _ in range(num)])
    # Drop regions too small to be worth a segment, so stuff segments are never slivers.
    while True:
        region = fields.argmax(0)
        areas = np.bincount(region.ravel(), minlength=num)
        small = [i for i in range(num) if 0 < areas[i] < 0.04 * h * w]
        if not small:
            return region, classes
        fields[small[0]] = -np.inf


def _shape_polygon(thing: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """``(N, 2)`` float64 xy vertices of thing class ``thing`` (index into THING_CLASSES),
    centred at ``(cx, cy)``, rotated by ``angle`` radians.

    ``r`` is a nominal size: every class covers about ``2.2 * r**2`` px, so that size does not
    tell the classes apart.
    """
    name = THING_CLASSES[thing]
    if name == 'circle':
        a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], 1) * 0.84
    elif name == 'square':
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.74
    elif name == 'triangle':
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(a), np.sin(a)], 1) * 1.3
    elif name == 'star':
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.3, 0.56)
        pts = np.stack([np.cos(a) * rad, np.sin(a) * rad], 1)
    elif name == 'cross':
        t = 0.33
        pts = np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1],
                        [-t, t], [-1, t], [-1, -t], [-t, -t]], np.float64)
    else:
        raise ValueError(f'unknown thing class {name!r}; expected one of {THING_CLASSES}')
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T * r + np.array([cx, cy])


def _coverage(polys: Sequence[np.ndarray], h: int, w: int) -> np.ndarray:
    """Fraction of each pixel covered by the union of ``polys`` (lists of (N, 2) xy vertices,
    pixel ``(i, j)`` spanning ``[j, j+1) x [i, i+1)``): ``(H, W)`` float32 in [0, 1].

    Rasterised at SUPERSAMPLE x resolution inside the polygons' bounding box only.
    """
    cov = np.zeros((h, w), np.float32)
    allpts = np.concatenate(polys)
    x0 = max(int(np.floor(allpts[:, 0].min())), 0)
    y0 = max(int(np.floor(allpts[:, 1].min())), 0)
    x1 = min(int(np.ceil(allpts[:, 0].max())) + 1, w)
    y1 = min(int(np.ceil(allpts[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return cov
    s, shift = SUPERSAMPLE, 4
    canvas = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
    # cv2 fills sub-pixels whose centre (integer coordinate) lies inside; continuous x maps to
    # sub-pixel coordinate (x - x0) * s - 0.5.  ``shift`` keeps 1/16 sub-pixel precision.
    pts = [np.round(((p - [x0, y0]) * s - 0.5) * (1 << shift)).astype(np.int32) for p in polys]
    cv2.fillPoly(canvas, pts, 1, lineType=cv2.LINE_8, shift=shift)
    block = canvas.reshape(y1 - y0, s, x1 - x0, s).mean((1, 3), dtype=np.float32)
    cov[y0:y1, x0:x1] = block
    return cov


def _paint(image: np.ndarray, cov: np.ndarray, colour: np.ndarray, rng: np.random.Generator,
           shading: float = 0.15) -> None:
    """Alpha-blend a flat ``colour`` with a random linear light gradient into ``image`` (H, W, 3)
    float32, in place, with per-pixel alpha ``cov`` (H, W)."""
    ys, xs = np.nonzero(cov)
    if ys.size == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = rng.uniform(0, 2 * np.pi)
    proj = (xx - xx.mean()) * np.cos(d) + (yy - yy.mean()) * np.sin(d)
    light = 1 + shading * proj / max(np.abs(proj).max(), 1.0)
    fill = colour[None, None] * light[..., None]
    a = cov[y0:y1, x0:x1, None]
    image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - a) + fill * a


def _contrasting_colour(rng: np.random.Generator, thing: int, image: np.ndarray,
                        mask: np.ndarray) -> np.ndarray:
    """A vivid colour of thing class ``thing``'s family, at least a little apart from the mean of
    ``image`` under ``mask``, so that every thing stands out from what it covers (also from an
    earlier thing of its class)."""
    under = image[mask].mean(0) if mask.any() else np.full(3, 128, np.float32)
    for _ in range(20):
        colour = _random_colour(rng, THING_HUES[thing], (0.6, 1.0), (0.45, 1.0))
        if np.abs(colour - under).sum() >= 120:
            break
    return colour


def render_scene(rng: np.random.Generator) -> Scene:
    """Draw one scene (see the module docstring) from ``rng``."""
    h, w = (int(v) for v in rng.integers(IMG_SIZE_RANGE[0], IMG_SIZE_RANGE[1] + 1, 2))
    region, region_classes = _stuff_layout(rng, h, w)
    image = np.zeros((h, w, 3), np.float32)
    for i, stuff in enumerate(region_classes):
        tex = _stuff_texture(rng, stuff, h, w)
        image[region == i] = tex[region == i]
    void = np.zeros((h, w), bool)
    short = min(h, w)

    # Unlabelled clutter: an irregular blob of colourful speckle, drawn under the things.
    if rng.random() < VOID_PROB:
        n = int(rng.integers(7, 13))
        a = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(10, 0.2 * short) * rng.uniform(0.5, 1.0, n)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        cov = _coverage([np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], 1)], h, w)
        speckle = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
        image = image * (1 - cov[..., None]) + speckle * cov[..., None]
        void = cov >= 0.5

    # Things, bottom to top; each ``Segment.mask`` shrinks as later things cover it.
    things: List[Segment] = []
    drawn_area: List[int] = []

    def occlusion_ok(mask: np.ndarray) -> bool:
        return all((seg.mask & ~mask).sum() >= max(MIN_VISIBLE_FRAC * area, MIN_SEGMENT_AREA)
                   for seg, area in zip(things, drawn_area))

    def draw(cov: np.ndarray, category_id: int, iscrowd: bool, colour: np.ndarray) -> None:
        mask = cov >= 0.5
        _paint(image, cov, colour, rng)
        for seg in things:
            seg.mask &= ~mask
        void[mask] = False
        things.append(Segment(category_id, mask, iscrowd))
        drawn_area.append(int(mask.sum()))

    # A crowd: several small shapes of one class packed together, labelled as one region.
    if rng.random() < CROWD_PROB:
        thing = int(rng.integers(len(THING_CLASSES)))
        cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
        spread = rng.uniform(8, 16)
        polys = []
        for _ in range(int(rng.integers(6, 13))):
            polys.append(_shape_polygon(thing, cx + rng.uniform(-spread, spread),
                                        cy + rng.uniform(-spread, spread), rng.uniform(5, 8),
                                        rng.uniform(0, 2 * np.pi)))
        cov = _coverage(polys, h, w)
        draw(cov, thing + 1, True, _contrasting_colour(rng, thing, image, cov >= 0.5))

    # Individual things; a placement that would hide too much of what is below is retried.
    for _ in range(int(rng.integers(NUM_THINGS_RANGE[0], NUM_THINGS_RANGE[1] + 1))):
        thing = int(rng.integers(len(THING_CLASSES)))
        r = float(np.exp(rng.uniform(np.log(MIN_THING_RADIUS_FRAC * short),
                                     np.log(MAX_THING_RADIUS_FRAC * short))))
        angle = rng.uniform(0, 2 * np.pi)
        for _try in range(15):
            cx, cy = rng.uniform(-0.3 * r, w + 0.3 * r), rng.uniform(-0.3 * r, h + 0.3 * r)
            poly = _shape_polygon(thing, cx, cy, r, angle)
            cov = _coverage([poly], h, w)
            mask = cov >= 0.5
            in_frame = mask.sum()
            # The polygon's full area (shoelace) tells how much of the shape left the frame.
            full = 0.5 * abs(np.dot(poly[:, 0], np.roll(poly[:, 1], 1)) -
                             np.dot(poly[:, 1], np.roll(poly[:, 0], 1)))
            if in_frame >= max(0.6 * full, MIN_SEGMENT_AREA) and occlusion_ok(mask):
                draw(cov, thing + 1, False, _contrasting_colour(rng, thing, image, mask))
                break

    # Global illumination and sensor noise, so that no two pixels of a flat fill are equal.
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    d = rng.uniform(0, 2 * np.pi)
    proj = ((xx - w / 2) * np.cos(d) + (yy - h / 2) * np.sin(d)) / (0.5 * max(h, w))
    image = image * (1 + rng.uniform(0, 0.15) * proj)[..., None]
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    segments = [seg for seg in things if seg.mask.any()]
    covered = void.copy()
    for seg in segments:
        covered |= seg.mask
    stuff_of_pixel = np.asarray(region_classes)[region]
    for stuff in sorted(set(region_classes)):
        mask = (stuff_of_pixel == stuff) & ~covered
        if mask.any():
            segments.append(Segment(len(THING_CLASSES) + stuff + 1, mask))
    return Scene(image, segments)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of the split sizes."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


# ---------------------------------------------------------------------------------------------
# Writing


def _encode_png(array: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(array).save(buf, format='PNG', optimize=False, compress_level=6)
    return buf.getvalue()


def _encode_jpeg(array: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(array).save(buf, format='JPEG', quality=JPEG_QUALITY)
    return buf.getvalue()


def _write(path: str, data: bytes) -> None:
    with open(path, 'wb') as f:
        f.write(data)


def _dump_json(path: str, obj: dict) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, separators=(',', ':'))


def _bbox(mask: np.ndarray) -> List[int]:
    """COCO ``[x, y, w, h]`` of the pixels of ``mask`` (H, W)."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]


def _image_id(split: str, index: int) -> int:
    # Train and val ids never collide, whatever the split sizes (as in COCO).
    return index + 1 if split == 'train' else 1_000_000 + index + 1


def _categories(things_only: bool = False) -> List[dict]:
    cats = []
    for cid, name, colour in zip(CATEGORY_IDS, CLASSES, PALETTE):
        isthing = name in THING_CLASSES
        if things_only and not isthing:
            continue
        cat = dict(id=cid, name=name, supercategory='shape' if isthing else 'texture')
        if not things_only:
            cat.update(isthing=int(isthing), color=list(colour))
        cats.append(cat)
    return cats


def _write_split(root: str, split: str, num: int, seed: int) -> dict:
    """Render and write ``num`` scenes of ``split`` under ``root``; returns the split's stats."""
    coco_img_dir = osp.join(root, 'coco', COCO_SPLIT_DIRS[split])
    pan_dir = osp.join(root, 'coco', 'annotations', f'panoptic_{COCO_SPLIT_DIRS[split]}')
    ade_img_dir = osp.join(root, 'ade', 'images', ADE_SPLIT_DIRS[split])
    ade_ann_dir = osp.join(root, 'ade', 'annotations', ADE_SPLIT_DIRS[split])
    for d in (coco_img_dir, pan_dir, ade_img_dir, ade_ann_dir):
        os.makedirs(d, exist_ok=True)
    info = dict(description=f'mmeomt synthetic shapes, {split} split', version=GENERATOR_VERSION,
                seed=seed)
    images, pan_anns, inst_anns = [], [], []
    segments_per_class = np.zeros(len(CLASSES), np.int64)
    pixels_per_class = np.zeros(len(CLASSES) + 1, np.int64)   # [0] = void
    num_crowd = 0
    for index in range(num):
        scene = render_scene(scene_rng(seed, split, index))
        h, w = scene.image.shape[:2]
        image_id = _image_id(split, index)
        stem = f'{image_id:012d}'
        jpg = _encode_jpeg(scene.image)
        _write(osp.join(coco_img_dir, stem + '.jpg'), jpg)
        _write(osp.join(ade_img_dir, stem + '.jpg'), jpg)
        ids, seg_ids = scene.panoptic_ids()
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        _write(osp.join(pan_dir, stem + '.png'), _encode_png(rgb))
        sem = scene.semantic_map()
        _write(osp.join(ade_ann_dir, stem + '.png'), _encode_png(sem))
        pixels_per_class += np.bincount(sem.ravel(), minlength=len(CLASSES) + 1)

        images.append(dict(id=image_id, file_name=stem + '.jpg', height=h, width=w))
        segments_info = []
        for seg, seg_id in zip(scene.segments, seg_ids):
            area, bbox = int(seg.mask.sum()), _bbox(seg.mask)
            segments_info.append(dict(id=seg_id, category_id=seg.category_id,
                                      iscrowd=int(seg.iscrowd), bbox=bbox, area=area))
            segments_per_class[seg.category_id - 1] += 1
            num_crowd += seg.iscrowd
            if seg.isthing:
                rle = mask_utils.encode(np.asfortranarray(seg.mask.astype(np.uint8)))
                inst_anns.append(dict(
                    id=len(inst_anns) + 1 + (0 if split == 'train' else 1_000_000),
                    image_id=image_id, category_id=seg.category_id,
                    segmentation=dict(size=[h, w], counts=rle['counts'].decode('ascii')),
                    area=area, bbox=bbox, iscrowd=int(seg.iscrowd)))
        pan_anns.append(dict(image_id=image_id, file_name=stem + '.png',
                             segments_info=segments_info))

    ann_dir = osp.join(root, 'coco', 'annotations')
    _dump_json(osp.join(ann_dir, f'panoptic_{COCO_SPLIT_DIRS[split]}.json'),
               dict(info=info, licenses=[], images=images, annotations=pan_anns,
                    categories=_categories()))
    _dump_json(osp.join(ann_dir, f'instances_{COCO_SPLIT_DIRS[split]}.json'),
               dict(info=info, licenses=[], images=images, annotations=inst_anns,
                    categories=_categories(things_only=True)))
    num_things = int(segments_per_class[:len(THING_CLASSES)].sum()) - num_crowd
    return dict(
        images=num,
        thing_instances=num_things,
        crowd_regions=num_crowd,
        instances_per_image=round(num_things / max(num, 1), 3),
        segments_per_class=dict(zip(CLASSES, segments_per_class.tolist())),
        pixel_fraction=dict(zip(('void', ) + CLASSES,
                                (pixels_per_class / max(pixels_per_class.sum(), 1))
                                .round(4).tolist())))


def _read_manifest(out_dir: str) -> Optional[dict]:
    try:
        with open(osp.join(out_dir, 'manifest.json'), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def generate_synthetic_dataset(out_dir: str, num_train: int = 400, num_val: int = 100,
                               seed: int = 0) -> Dict:
    """Write the synthetic dataset to ``out_dir`` unless it is already there.

    Layout (``<split>`` = train2017/val2017 for COCO, training/validation for ADE)::

        out_dir/manifest.json
        out_dir/coco/<split>/*.jpg
        out_dir/coco/annotations/panoptic_<split>.json, panoptic_<split>/*.png
        out_dir/coco/annotations/instances_<split>.json
        out_dir/ade/images/<split>/*.jpg, ade/annotations/<split>/*.png

    Args:
        out_dir (str): dataset root; created (with parents) if missing.
        num_train (int): training images. Defaults to 400.
        num_val (int): held-out validation images. Defaults to 100.
        seed (int): fixes every byte written. Defaults to 0.

    Returns:
        dict: the manifest: ``version``, ``params`` and per-split ``stats``.

    Raises:
        ValueError: a count or seed is not a non-negative int.
        FileExistsError: ``out_dir`` exists but holds no manifest of this generator (it is not
            overwritten: it may be someone's data).
    """
    for name, value in (('num_train', num_train), ('num_val', num_val), ('seed', seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f'{name} must be a non-negative int, got {value!r}')
    params = dict(num_train=int(num_train), num_val=int(num_val), seed=int(seed))
    out_dir = osp.abspath(out_dir)
    existing = _read_manifest(out_dir)
    if existing is not None and existing.get('version') == GENERATOR_VERSION \
            and existing.get('params') == params:
        return existing
    if osp.isdir(out_dir) and not os.listdir(out_dir):
        os.rmdir(out_dir)  # an empty directory made beforehand holds nothing to protect
    if osp.exists(out_dir) and (existing is None or existing.get('generator') != __name__):
        raise FileExistsError(
            f'{out_dir} exists and is not a dataset written by {__name__} (no manifest.json); '
            'remove it or choose another output directory')

    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    # Build beside the target and rename: an interrupted run leaves only a hidden temp dir.
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(out_dir)}.tmp-', dir=parent)
    try:
        stats = {split: _write_split(tmp, split, n, params['seed'])
                 for split, n in zip(SPLITS, (params['num_train'], params['num_val']))}
        manifest = dict(generator=__name__, version=GENERATOR_VERSION, params=params,
                        classes=list(CLASSES), thing_classes=list(THING_CLASSES),
                        stuff_classes=list(STUFF_CLASSES), stats=stats)
        with open(osp.join(tmp, 'manifest.json'), 'w', encoding='utf-8') as f:
            json.dump(manifest, f, indent=2)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if osp.exists(out_dir):
            # An older version or other parameters: replace it, after the new one is complete.
            old = tempfile.mkdtemp(prefix=f'.{osp.basename(out_dir)}.old-', dir=parent)
            os.rename(out_dir, osp.join(old, 'data'))
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out_dir)
            except OSError:
                # Another process finished the same dataset first: keep theirs if it matches.
                theirs = _read_manifest(out_dir)
                if theirs is None or theirs.get('params') != params \
                        or theirs.get('version') != GENERATOR_VERSION:
                    raise
                manifest = theirs
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest
