"""The synthetic scenes as COCO panoptic and COCO instance files (mmdet's loaders read them).

* COCO panoptic: ``coco/<split>/*.jpg``, ``coco/annotations/panoptic_<split>.json`` and
  ``panoptic_<split>/*.png`` whose RGB encodes the segment id as ``R + 256 * G + 256**2 * B``;
* COCO instance: ``coco/annotations/instances_<split>.json`` over the same images, masks as
  compressed RLE, crowd groups as ``iscrowd=1``.

``<split>`` is ``train2017`` / ``val2017``.
"""
import os
import os.path as osp
from typing import List

import numpy as np
from pycocotools import mask as mask_utils

from ...utils.panopticapi_compat import id2rgb
from .files import bbox, dump_json, encode_png, write_bytes
from .scene import CATEGORY_IDS, CLASSES, PALETTE, THING_CLASSES, Scene

SPLIT_DIRS = {'train': 'train2017', 'val': 'val2017'}
# Instance annotation ids of the val split start here, so that they never collide with train's.
VAL_ID_OFFSET = 1_000_000


def categories(things_only: bool = False) -> List[dict]:
    """The ``categories`` of the panoptic file (with ``isthing`` and ``color``), or of the
    instance file (things only)."""
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


class CocoPanopticWriter:
    """Writes one split in COCO panoptic format: the images, the PNGs, then (:meth:`close`) the
    JSON file.

    Args:
        root: dataset root (``coco/`` is made under it).
        split: ``'train'`` or ``'val'``.
        info: the JSON file's ``info``.
    """

    def __init__(self, root: str, split: str, info: dict):
        split_dir = SPLIT_DIRS[split]
        self.img_dir = osp.join(root, 'coco', split_dir)
        self.ann_dir = osp.join(root, 'coco', 'annotations')
        self.png_dir = osp.join(self.ann_dir, f'panoptic_{split_dir}')
        self.json_path = osp.join(self.ann_dir, f'panoptic_{split_dir}.json')
        for d in (self.img_dir, self.png_dir):
            os.makedirs(d, exist_ok=True)
        self.info = info
        self.images: List[dict] = []
        self.annotations: List[dict] = []

    def add(self, image_id: int, stem: str, jpg: bytes, scene: Scene) -> None:
        h, w = scene.image.shape[:2]
        write_bytes(osp.join(self.img_dir, stem + '.jpg'), jpg)
        ids, seg_ids = scene.panoptic_ids()
        write_bytes(osp.join(self.png_dir, stem + '.png'), encode_png(id2rgb(ids)))
        self.images.append(dict(id=image_id, file_name=stem + '.jpg', height=h, width=w))
        segments_info = [
            dict(id=seg_id, category_id=seg.category_id, iscrowd=int(seg.iscrowd),
                 bbox=bbox(seg.mask), area=int(seg.mask.sum()))
            for seg, seg_id in zip(scene.segments, seg_ids)
        ]
        self.annotations.append(dict(image_id=image_id, file_name=stem + '.png',
                                     segments_info=segments_info))

    def close(self) -> None:
        dump_json(self.json_path,
                  dict(info=self.info, licenses=[], images=self.images,
                       annotations=self.annotations, categories=categories()))


class CocoInstanceWriter:
    """Writes one split in COCO instance format (:meth:`close` writes the JSON file); the
    images are the panoptic writer's, in the same directory.

    Args:
        root: dataset root.
        split: ``'train'`` or ``'val'``.
        info: the JSON file's ``info``.
    """

    def __init__(self, root: str, split: str, info: dict):
        ann_dir = osp.join(root, 'coco', 'annotations')
        os.makedirs(ann_dir, exist_ok=True)
        self.json_path = osp.join(ann_dir, f'instances_{SPLIT_DIRS[split]}.json')
        self.id_offset = 0 if split == 'train' else VAL_ID_OFFSET
        self.info = info
        self.images: List[dict] = []
        self.annotations: List[dict] = []

    def add(self, image_id: int, stem: str, scene: Scene) -> None:
        h, w = scene.image.shape[:2]
        self.images.append(dict(id=image_id, file_name=stem + '.jpg', height=h, width=w))
        for seg in scene.segments:
            if not seg.isthing:
                continue
            rle = mask_utils.encode(np.asfortranarray(seg.mask.astype(np.uint8)))
            self.annotations.append(dict(
                id=len(self.annotations) + 1 + self.id_offset,
                image_id=image_id, category_id=seg.category_id,
                segmentation=dict(size=[h, w], counts=rle['counts'].decode('ascii')),
                area=int(seg.mask.sum()), bbox=bbox(seg.mask), iscrowd=int(seg.iscrowd)))

    def close(self) -> None:
        dump_json(self.json_path,
                  dict(info=self.info, licenses=[], images=self.images,
                       annotations=self.annotations, categories=categories(things_only=True)))
