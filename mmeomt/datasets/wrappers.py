"""A dataset wrapper that leaves out samples whose image or segmentation file cannot be read."""
import copy
import logging
from typing import List, Union

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from mmeomt.registry import DATASETS
from .image_check import find_unreadable

_FILE_KEYS = ('img_path', 'seg_map_path')


@DATASETS.register_module()
class SkipUnreadableImages:
    """``dataset`` without the samples whose files (``img_path``, ``seg_map_path``) are
    missing, empty or cannot be decoded (``tools/test.py --skip-bad-images``).

    Every file is decoded once when the wrapper is initialised (in threads), so that every
    process of a distributed run leaves out the same samples and the evaluation sees a
    consistent dataset; the samples left out are logged with the reason and listed in
    :attr:`skipped`.  ``mmeomt.SkippedImagesHook`` adds their number to the metrics and keeps
    COCO's instance metric from counting their annotations as missed.

    Args:
        dataset: the dataset or its config.
        num_threads: decoding threads for the check.
        lazy_init: defer the check to :meth:`full_init` (as mmengine's datasets).
    """

    def __init__(self, dataset: Union[BaseDataset, dict], num_threads: int = 8,
                 lazy_init: bool = False):
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.num_threads = num_threads
        self._metainfo = copy.deepcopy(self.dataset.metainfo)
        self.kept: List[int] = []
        self.skipped: List[dict] = []
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self._metainfo)

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        infos = [self.dataset.get_data_info(i) for i in range(len(self.dataset))]
        files = {(i, info[k]) for i, info in enumerate(infos) for k in _FILE_KEYS
                 if isinstance(info.get(k), str)}
        paths = sorted({path for _, path in files})
        bad = dict(find_unreadable(paths, getattr(self.dataset, 'backend_args', None),
                                   self.num_threads))
        bad_indices = {}
        for i, path in sorted(files):
            if path in bad:
                bad_indices.setdefault(i, []).append(f'{path}: {bad[path]}')
        self.kept = [i for i in range(len(infos)) if i not in bad_indices]
        self.skipped = [dict(index=i, img_id=infos[i].get('img_id'), files=problems)
                        for i, problems in sorted(bad_indices.items())]
        if self.skipped:
            listing = '; '.join(' and '.join(s['files']) for s in self.skipped[:10])
            more = f' (and {len(self.skipped) - 10} more)' if len(self.skipped) > 10 else ''
            print_log(f'SkipUnreadableImages: leaving out {len(self.skipped)} of {len(infos)} '
                      f'samples of {type(self.dataset).__name__} whose files cannot be read: '
                      f'{listing}{more}', logger='current', level=logging.WARNING)
        self._fully_initialized = True

    def _check(self) -> None:
        if not self._fully_initialized:
            self.full_init()

    def __len__(self) -> int:
        self._check()
        return len(self.kept)

    def __getitem__(self, idx: int):
        self._check()
        return self.dataset[self.kept[idx]]

    def get_data_info(self, idx: int) -> dict:
        self._check()
        return self.dataset.get_data_info(self.kept[idx])


__all__ = ['SkipUnreadableImages']
