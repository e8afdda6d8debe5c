"""A small synthetic segmentation dataset, so that EoMT can be seen learning without COCO or ADE20K.

One set of scenes (:mod:`.scene`: shaded shapes over textured stuff, with occlusion, crowds and
unlabelled clutter) is written in the three formats the real configs read:

* COCO panoptic and COCO instance (:mod:`.coco`), for mmdet's ``CocoPanopticDataset`` and
  ``CocoDataset``;
* ADE20K-style semantic maps (:mod:`.ade`), for mmseg's ``BaseSegDataset``.

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
from typing import Dict, Optional

import numpy as np

from .ade import AdeSemanticWriter
from .coco import CocoInstanceWriter, CocoPanopticWriter
from .files import encode_jpeg
from .scene import (CATEGORY_IDS, CLASSES, PALETTE, SPLITS, STUFF_CLASSES, THING_CLASSES, Scene,
                    Segment, render_scene, scene_rng)

__all__ = [
    'generate_synthetic_dataset', 'render_scene', 'scene_rng', 'Scene', 'Segment', 'CLASSES',
    'THING_CLASSES', 'STUFF_CLASSES', 'CATEGORY_IDS', 'PALETTE', 'SPLITS', 'GENERATOR_VERSION'
]

# Bump whenever a change alters any written byte: the manifest check then regenerates old data.
GENERATOR_VERSION = 3
# The manifest's `generator`: how a directory written by this generator is recognised (datasets
# written before the module became a package carry the same name).
GENERATOR = 'mmeomt.datasets.synthetic'


def _image_id(split: str, index: int) -> int:
    # Train and val ids never collide, whatever the split sizes (as in COCO).
    return index + 1 if split == 'train' else 1_000_000 + index + 1


def _write_split(root: str, split: str, num: int, seed: int) -> dict:
    """Render ``num`` scenes of ``split`` and write them in every format under ``root``;
    returns the split's stats."""
    info = dict(description=f'mmeomt synthetic shapes, {split} split', version=GENERATOR_VERSION,
                seed=seed)
    panoptic = CocoPanopticWriter(root, split, info)
    instance = CocoInstanceWriter(root, split, info)
    semantic = AdeSemanticWriter(root, split)
    segments_per_class = np.zeros(len(CLASSES), np.int64)
    pixels_per_class = np.zeros(len(CLASSES) + 1, np.int64)   # [0] = void
    num_crowd = 0
    for index in range(num):
        scene = render_scene(scene_rng(seed, split, index))
        image_id = _image_id(split, index)
        stem = f'{image_id:012d}'
        jpg = encode_jpeg(scene.image)  # the same bytes in both layouts
        panoptic.add(image_id, stem, jpg, scene)
        instance.add(image_id, stem, scene)
        semantic.add(stem, jpg, scene)

        h, w = scene.image.shape[:2]
        # Segments never overlap: the pixels outside all of them are void.
        pixels_per_class[0] += h * w
        for seg in scene.segments:
            area = int(seg.mask.sum())
            pixels_per_class[seg.category_id] += area
            pixels_per_class[0] -= area
            segments_per_class[seg.category_id - 1] += 1
            num_crowd += seg.iscrowd
    panoptic.close()
    instance.close()

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
    if osp.exists(out_dir) and (existing is None or existing.get('generator') != GENERATOR):
        raise FileExistsError(
            f'{out_dir} exists and is not a dataset written by {GENERATOR} (no manifest.json); '
            'remove it or choose another output directory')

    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    # Build beside the target and rename: an interrupted run leaves only a hidden temp dir.
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(out_dir)}.tmp-', dir=parent)
    try:
        stats = {split: _write_split(tmp, split, n, params['seed'])
                 for split, n in zip(SPLITS, (params['num_train'], params['num_val']))}
        manifest = dict(generator=GENERATOR, version=GENERATOR_VERSION, params=params,
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
