"""The synthetic scenes: what is drawn, independent of the file formats.

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

Every image is drawn from its own ``numpy`` generator seeded by ``(seed, split, index)``
(:func:`scene_rng`), so a seed fixes every pixel, and a larger split keeps its first images.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

THING_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
STUFF_CLASSES = ('stripes', 'checker', 'noise')
CLASSES = THING_CLASSES + STUFF_CLASSES
# Category id of CLASSES[i] in the COCO files and its label value in the semantic PNGs: i + 1.
CATEGORY_IDS = tuple(range(1, len(CLASSES) + 1))
PALETTE = ((220, 20, 60), (0, 130, 230), (250, 170, 30), (150, 60, 220), (20, 190, 80),
           (120, 120, 120), (170, 120, 60), (90, 190, 190))
SPLITS = ('train', 'val')
# Scene parameters (changing one changes the data: bump GENERATOR_VERSION, __init__.py).
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
