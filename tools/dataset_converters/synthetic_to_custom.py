"""Present the synthetic shapes as "your own" dataset, in the layout of the custom templates.

    python tools/dataset_converters/synthetic_to_custom.py --out data/my_data

The worked example of docs/custom_dataset.md: a class subset of the synthetic shapes under
other names and category ids, written as a user would bring it (the layouts named at the top of
``configs/eomt/custom/*.py``)::

    out/images/{train,val}/*.jpg
    out/annotations/panoptic_{train,val}.json + panoptic_{train,val}/*.png   (panoptic)
    out/annotations/instances_{train,val}.json                               (instance)
    out/annotations/{train,val}/*.png   label PNGs: 0..K-1 in class order, 255 = ignore

Shapes of the classes left out are unlabelled: void (id 0) in the panoptic PNGs, absent from
the instance file, 255 in the label PNGs.  Crowd regions stay crowd (``iscrowd=1``: ignored by
training and the metrics; 255 in the label PNGs).  ``--out`` must not exist: the folder is
written beside it and renamed into place when complete.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, Tuple

import mmcv
import numpy as np

from mmeomt.datasets.synthetic import generate_synthetic_dataset
from mmeomt.utils.panopticapi_compat import id2rgb

# Synthetic class -> (the user's name, the user's category id).  Ids of their own (not 1..K),
# increasing in the order of the config's classes (things, then stuff), as the templates need.
THINGS: Dict[str, Tuple[str, int]] = {'circle': ('cell', 3), 'star': ('mitosis', 7)}
STUFF: Dict[str, Tuple[str, int]] = {'stripes': ('stroma', 12), 'noise': ('background', 20)}
THING_CLASSES = [name for name, _ in THINGS.values()]
STUFF_CLASSES = [name for name, _ in STUFF.values()]


def _load(path: str) -> dict:
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _dump(path: str, obj: dict) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f)


def convert_split(coco_root: str, source_split: str, out: str, split: str) -> int:
    """Write one split of the custom dataset from a split (``train2017``/``val2017``) of the
    synthetic COCO files; returns its number of images."""
    ann_dir = osp.join(coco_root, 'annotations')
    panoptic = _load(osp.join(ann_dir, f'panoptic_{source_split}.json'))
    instances = _load(osp.join(ann_dir, f'instances_{source_split}.json'))
    user = {**THINGS, **STUFF}
    names = {c['id']: c['name'] for c in panoptic['categories']}
    new_id = {cid: user[name][1] for cid, name in names.items() if name in user}
    classes = THING_CLASSES + STUFF_CLASSES
    label = {cid: classes.index(user[name][0]) for name, (_, cid) in
             ((n, user[n]) for n in names.values() if n in user)}
    categories = sorted(
        (dict(id=cid, name=name, isthing=int(syn in THINGS), supercategory='user')
         for syn, (name, cid) in user.items()), key=lambda c: c['id'])

    img_dir = osp.join(out, 'images', split)
    pan_dir = osp.join(out, 'annotations', f'panoptic_{split}')
    sem_dir = osp.join(out, 'annotations', split)
    for d in (img_dir, pan_dir, sem_dir):
        os.makedirs(d, exist_ok=True)
    annotations = []
    for ann in panoptic['annotations']:
        stem = osp.splitext(ann['file_name'])[0]
        shutil.copy(osp.join(coco_root, source_split, stem + '.jpg'), img_dir)
        rgb = mmcv.imread(osp.join(ann_dir, f'panoptic_{source_split}', stem + '.png'),
                          channel_order='rgb').astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        kept, semantic = [], np.full(ids.shape, 255, np.uint8)
        for seg in ann['segments_info']:
            if seg['category_id'] not in new_id:
                ids[ids == seg['id']] = 0  # void
                continue
            seg = dict(seg, category_id=new_id[seg['category_id']])
            kept.append(seg)
            if not seg['iscrowd']:
                semantic[ids == seg['id']] = label[seg['category_id']]
        mmcv.imwrite(id2rgb(ids)[..., ::-1], osp.join(pan_dir, stem + '.png'))  # RGB, written as BGR
        mmcv.imwrite(semantic, osp.join(sem_dir, stem + '.png'))
        annotations.append(dict(ann, segments_info=kept))
    _dump(osp.join(out, 'annotations', f'panoptic_{split}.json'),
          dict(panoptic, annotations=annotations, categories=categories))
    _dump(osp.join(out, 'annotations', f'instances_{split}.json'),
          dict(instances, categories=[c for c in categories if c['isthing']],
               annotations=[dict(a, category_id=new_id[a['category_id']])
                            for a in instances['annotations'] if a['category_id'] in new_id]))
    return len(annotations)


def synthetic_to_custom(synthetic_root: str, out: str, val_from_train: bool = False) -> dict:
    """The custom dataset under ``out`` from the synthetic dataset at ``synthetic_root``.

    ``val_from_train`` writes the synthetic *training* images as the validation split too (a
    few iterations learn what they are shown but do not generalise: the CI test's check).
    Returns the number of images per split.
    """
    out = osp.abspath(out)
    if osp.exists(out):
        raise FileExistsError(f'{out} exists; give a new folder (nothing is overwritten)')
    coco_root = osp.join(synthetic_root, 'coco')
    os.makedirs(osp.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.tmp-', dir=osp.dirname(out))
    try:
        counts = {split: convert_split(coco_root, source, tmp, split) for split, source in
                  (('train', 'train2017'), ('val', 'train2017' if val_from_train else 'val2017'))}
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return counts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/my_data', help='the custom dataset (new folder)')
    parser.add_argument('--synthetic', default='data/synthetic',
                        help='synthetic dataset root (generated there if absent)')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=100, help='validation images')
    parser.add_argument('--val-from-train', action='store_true',
                        help='use the training images as the validation split too')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    generate_synthetic_dataset(args.synthetic, num_train=args.num_train, num_val=args.num_val)
    counts = synthetic_to_custom(args.synthetic, args.out, args.val_from_train)
    print(f'{args.out}: {counts["train"]} train / {counts["val"]} val images; '
          f'thing_classes={THING_CLASSES}, stuff_classes={STUFF_CLASSES}')
    return counts


if __name__ == '__main__':
    main()
