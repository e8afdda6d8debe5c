"""Inferencer inputs checked before they reach a pipeline.

mmdet's and mmseg's inferencers pass an array straight to the pipeline: a 2-D array ends in an
``IndexError`` deep in mmengine, a float array is cast and segmented as if its values were
pixel intensities.  A path that cannot be decoded stops the whole call.  :func:`prepare_inputs`
gives every input the form a file of the same kind would have after OpenCV's colour decoding
(BGR ``(H, W, 3)`` uint8) or a clear error naming it, and with ``skip_bad_images`` leaves
unreadable files out instead of failing.
"""
import os
from typing import List, Sequence, Tuple, Union

import numpy as np

from mmeomt.datasets.image_check import UnreadableImageError, image_problem

InputType = Union[str, np.ndarray]
EXPECTED = ('an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 or uint16 image array '
            '(3 channels: BGR, 4: BGRA, as OpenCV reads files)')


def as_bgr_image(array: np.ndarray, name: str = 'input') -> np.ndarray:
    """``array`` as a BGR ``(H, W, 3)`` uint8 image, converted as ``cv2.imread`` converts files.

    Grey images are repeated to 3 channels, the alpha channel of BGRA images is dropped and
    16-bit values are scaled to 8 bits (the high byte).

    Raises:
        TypeError: not a numpy array, or not uint8/uint16 (e.g. float: scale it to 0-255 and
            cast to uint8 first).
        ValueError: a shape that is no image, with ``name`` and the shape in the message.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f'{name}: expected {EXPECTED} or an image path, got '
                        f'{type(array).__name__}')
    shape = tuple(array.shape)
    if array.dtype not in (np.uint8, np.uint16):
        hint = (' (floats: scale to 0-255 and cast with .astype(np.uint8))'
                if np.issubdtype(array.dtype, np.floating) else '')
        raise TypeError(f'{name}: expected {EXPECTED}, got an array of dtype {array.dtype} '
                        f'and shape {shape}{hint}')
    if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 3, 4)):
        hint = (' (channels first? transpose to (H, W, C))'
                if array.ndim == 3 and shape[0] in (1, 3, 4) and shape[2] > 4 else '')
        raise ValueError(f'{name}: expected {EXPECTED}, got shape {shape}{hint}')
    if 0 in shape[:2]:
        raise ValueError(f'{name}: expected {EXPECTED}, got an empty image of shape {shape}')
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[..., :3]
    return np.ascontiguousarray(array)


def prepare_inputs(inputs: Sequence[InputType], skip_bad_images: bool = False,
                   backend_args=None,
                   check_paths: bool = True) -> Tuple[List[InputType], List[dict]]:
    """Check every input of an inferencer call.

    Args:
        inputs: image paths and arrays (a folder already expanded to its files).
        skip_bad_images: leave paths that are missing or cannot be decoded out (they are
            returned in ``skipped``) instead of raising.
        backend_args: mmengine file backend arguments for reading the paths.
        check_paths: decode every path once here (needed to skip bad files); False leaves
            paths to the pipeline's loader, which names a file it cannot decode.

    Returns:
        ``(kept, skipped)``: the paths unchanged and the arrays as :func:`as_bgr_image` makes
        them, in order; ``skipped`` holds ``dict(index, input, reason)`` per left-out path.

    Raises:
        UnreadableImageError: a path that cannot be read, naming it (without
            ``skip_bad_images``).
        TypeError, ValueError: an array that is no image (:func:`as_bgr_image`) or an input
            that is neither a path nor an array; arrays are never skipped (a wrong array is a
            programming error, not a bad file).
    """
    kept, skipped = [], []
    for index, item in enumerate(inputs):
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            problem = image_problem(path, backend_args) if check_paths else None
            if problem is None:
                kept.append(path)
            elif skip_bad_images:
                skipped.append(dict(index=index, input=path, reason=problem))
            else:
                raise UnreadableImageError(path, f'{problem} (input {index}; pass '
                                           'skip_bad_images=True to leave such files out)')
        else:
            kept.append(as_bgr_image(item, name=f'input {index}'))
    return kept, skipped


__all__ = ['as_bgr_image', 'prepare_inputs', 'EXPECTED']
