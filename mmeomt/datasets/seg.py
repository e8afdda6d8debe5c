"""mmseg's semantic datasets whose pipeline errors name the sample's files (see
:class:`~mmeomt.datasets.coco.NamedSampleErrorsMixin`): an undecodable image or label PNG
raises :class:`~mmeomt.datasets.image_check.UnreadableImageError` naming it instead of mmseg's
``'NoneType' object has no attribute 'squeeze'``."""
from mmseg.datasets import ADE20KDataset as _MMSegADE20KDataset
from mmseg.datasets import BaseSegDataset
from mmseg.datasets import CityscapesDataset as _MMSegCityscapesDataset

from mmeomt.registry import DATASETS
from .coco import NamedSampleErrorsMixin


@DATASETS.register_module()
class ADE20KDataset(NamedSampleErrorsMixin, _MMSegADE20KDataset):
    """mmseg's ``ADE20KDataset``, with errors that name the file."""


@DATASETS.register_module()
class CityscapesDataset(NamedSampleErrorsMixin, _MMSegCityscapesDataset):
    """mmseg's ``CityscapesDataset``, with errors that name the file."""


@DATASETS.register_module()
class SegDataset(NamedSampleErrorsMixin, BaseSegDataset):
    """mmseg's ``BaseSegDataset`` (images + single-channel label PNGs, classes from
    ``metainfo``), with errors that name the file: the dataset of the custom semantic configs
    (``configs/eomt/custom/``, ``docs/custom_dataset.md``)."""


__all__ = ['ADE20KDataset', 'CityscapesDataset', 'SegDataset']
