"""Loading transforms that name the file they fail on and check what they read."""
import logging
from typing import Optional

import mmcv
import numpy as np
from mmdet.datasets.transforms import LoadPanopticAnnotations as _MMDetLoadPanopticAnnotations
from mmdet.structures.mask import BitmapMasks
from mmengine.fileio import get
from mmengine.logging import print_log
from panopticapi.utils import rgb2id

from mmeomt.registry import TRANSFORMS
from .coco import BAD_DATA_CHOICES
from .image_check import UnreadableImageError, decode_problem


def read_segment_ids(path: str, backend_args: Optional[dict] = None,
                     imdecode_backend: str = 'cv2') -> np.ndarray:
    """``(H, W)`` int32 segment ids ``R + 256 * G + 256**2 * B`` of a panoptic PNG.

    Raises :class:`~mmeomt.datasets.image_check.UnreadableImageError` naming a PNG that is
    missing, empty or cannot be decoded.
    """
    try:
        content = get(path, backend_args=backend_args)
    except FileNotFoundError:
        raise UnreadableImageError(path, 'no such file', 'segment PNG') from None
    try:
        bgr = mmcv.imfrombytes(content, flag='color', channel_order='bgr',
                               backend=imdecode_backend)
    except Exception:  # pillow and turbojpeg raise where OpenCV returns None
        bgr = None
    if bgr is None:
        raise UnreadableImageError(path, decode_problem(content) or 'cannot be decoded',
                                   'segment PNG')
    return rgb2id(bgr[..., ::-1])  # int32, as mmdet


@TRANSFORMS.register_module()
class LoadPanopticAnnotations(_MMDetLoadPanopticAnnotations):
    """mmdet's ``LoadPanopticAnnotations`` that checks the segment PNG against the JSON.

    mmdet turns an undecodable PNG into an OpenCV assertion without a file name, and every
    pixel whose segment id has no entry in ``segments_info`` silently into void.  Here:

    * a PNG that is missing, empty or cannot be decoded raises
      :class:`~mmeomt.datasets.image_check.UnreadableImageError` naming it;
    * a PNG whose size is not the image's raises a ``ValueError`` naming both;
    * segment ids in the PNG without an entry in the JSON (other than 0, COCO's void, and the
      segments the dataset dropped, ``ignored_segment_ids``) raise a ``ValueError`` naming the
      PNG, the image id and the ids with their colours and pixel counts -- or, with
      ``on_bad_data='skip'``, become void (as in mmdet) with a warning that gives the count.

    Args:
        on_bad_data: ``'error'`` (default) or ``'skip'``, as the dataset's.
        *args, **kwargs: mmdet's ``LoadPanopticAnnotations`` arguments.
    """

    def __init__(self, *args, on_bad_data: str = 'error', **kwargs):
        if on_bad_data not in BAD_DATA_CHOICES:
            raise ValueError(f'LoadPanopticAnnotations: on_bad_data must be one of '
                             f'{BAD_DATA_CHOICES}, got {on_bad_data!r}')
        super().__init__(*args, **kwargs)
        self.on_bad_data = on_bad_data

    def _read_segment_ids(self, path: str) -> np.ndarray:
        return read_segment_ids(path, self.backend_args, self.imdecode_backend)

    def _check_ids(self, ids: np.ndarray, results: dict) -> None:
        path = results['seg_map_path']
        known = {s['id'] for s in results['segments_info']}
        known |= set(results.get('ignored_segment_ids', ())) | {0}
        present, counts = np.unique(ids, return_counts=True)
        unknown = [(int(i), int(n)) for i, n in zip(present, counts) if int(i) not in known]
        if not unknown:
            return
        described = ', '.join(
            f'{i} (RGB {i % 256},{i // 256 % 256},{i // 65536}: {n} px)' for i, n in unknown[:5])
        more = f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''
        message = (f'segment PNG {path} of image {results.get("img_id")} holds segment ids '
                   f'without an entry in the annotation file: {described}{more}')
        if self.on_bad_data == 'error':
            raise ValueError(f'LoadPanopticAnnotations: {message}. To treat their pixels as '
                             "void with a warning instead, set on_bad_data='skip'")
        print_log(f'LoadPanopticAnnotations: {message}; {len(unknown)} segment(s), '
                  f'{sum(n for _, n in unknown)} pixels treated as void', logger='current',
                  level=logging.WARNING)

    def _load_masks_and_semantic_segs(self, results: dict) -> None:
        if results.get('seg_map_path', None) is None:
            return
        path = results['seg_map_path']
        ids = self._read_segment_ids(path)
        h, w = results['ori_shape']
        if ids.shape != (h, w):
            raise ValueError(f'LoadPanopticAnnotations: segment PNG {path} is '
                             f'{ids.shape[0]}x{ids.shape[1]}, its image {results.get("img_path")} '
                             f'{h}x{w}')
        self._check_ids(ids, results)
        gt_seg = np.full(ids.shape, 255, dtype=ids.dtype)  # 255: void / ignored
        thing_masks = []
        for segment in results['segments_info']:
            mask = ids == segment['id']
            gt_seg[mask] = segment['category']
            if segment.get('is_thing'):
                thing_masks.append(mask.astype(np.uint8))
        if self.with_mask:
            results['gt_masks'] = BitmapMasks(thing_masks, h, w)
        if self.with_seg:
            results['gt_seg_map'] = gt_seg

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', on_bad_data={self.on_bad_data!r})'
