"""mmdet/mmseg datasets for the synthetic shapes written by :mod:`mmeomt.datasets.synthetic`.

The host libraries' loaders read the files as they read COCO and ADE20K (through mmeomt's
checked COCO datasets, :mod:`mmeomt.datasets.coco`); these subclasses only replace the fixed
class lists (COCO's 80/133, ADE20K's 150) with ours, so that ``cat2label``, the metrics and the
visualisers see our names and colours.  In a config (default scope ``mmdet`` or ``mmseg``) they
are written ``type='mmeomt.Synthetic...Dataset'``.
"""
from mmseg.datasets import BaseSegDataset

from mmeomt.registry import DATASETS
from .coco import CocoDataset, CocoPanopticDataset, NamedSampleErrorsMixin
from .synthetic.scene import CLASSES, PALETTE, STUFF_CLASSES, THING_CLASSES


@DATASETS.register_module()
class SyntheticPanopticDataset(CocoPanopticDataset):
    """Synthetic shapes in COCO panoptic format: 5 thing and 3 stuff classes.

    ``data_root='data/synthetic/coco/'``, ``ann_file='annotations/panoptic_train2017.json'``,
    ``data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/')``.
    """
    METAINFO = dict(classes=CLASSES, thing_classes=THING_CLASSES, stuff_classes=STUFF_CLASSES,
                    palette=list(PALETTE))


@DATASETS.register_module()
class SyntheticInstanceDataset(CocoDataset):
    """Synthetic shapes in COCO instance format (RLE masks, a few ``iscrowd`` groups).

    ``data_root='data/synthetic/coco/'``, ``ann_file='annotations/instances_train2017.json'``,
    ``data_prefix=dict(img='train2017/')``.
    """
    METAINFO = dict(classes=THING_CLASSES, palette=list(PALETTE[:len(THING_CLASSES)]))


@DATASETS.register_module()
class SyntheticSemanticDataset(NamedSampleErrorsMixin, BaseSegDataset):
    """Synthetic shapes as ADE20K-style semantic maps: 8 classes (things and stuff).

    The label PNGs hold 0 for unlabelled pixels and ``1..8`` for ``CLASSES``; like ADE20K the
    dataset reduces the zero label, so the model sees ``0..7`` and 255 is ignored.

    ``data_root='data/synthetic/ade/'``,
    ``data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')``.
    """
    METAINFO = dict(classes=CLASSES, palette=[list(c) for c in PALETTE])

    def __init__(self, img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = True, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)
