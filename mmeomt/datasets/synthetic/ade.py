"""The synthetic scenes as ADE20K-style semantic segmentation files (mmseg's loader reads them).

``ade/images/<split>/*.jpg`` and ``ade/annotations/<split>/*.png`` (``<split>`` = ``training`` /
``validation``): 0 = unlabelled, ``1..K`` = the classes, i.e. ``reduce_zero_label=True``, as
ADE20K.
"""
import os
import os.path as osp

from .files import encode_png, write_bytes
from .scene import Scene

SPLIT_DIRS = {'train': 'training', 'val': 'validation'}


class AdeSemanticWriter:
    """Writes one split's images and label maps.

    Args:
        root: dataset root (``ade/`` is made under it).
        split: ``'train'`` or ``'val'``.
    """

    def __init__(self, root: str, split: str):
        self.img_dir = osp.join(root, 'ade', 'images', SPLIT_DIRS[split])
        self.ann_dir = osp.join(root, 'ade', 'annotations', SPLIT_DIRS[split])
        for d in (self.img_dir, self.ann_dir):
            os.makedirs(d, exist_ok=True)

    def add(self, stem: str, jpg: bytes, scene: Scene) -> None:
        write_bytes(osp.join(self.img_dir, stem + '.jpg'), jpg)
        write_bytes(osp.join(self.ann_dir, stem + '.png'), encode_png(scene.semantic_map()))
