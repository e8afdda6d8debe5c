"""Whether an image file can be decoded, and the error that names the one that cannot.

OpenCV decodes a damaged file to ``None`` (and an empty one to an exception), which mmcv and
mmdet turn into ``failed to load image`` at best and a ``cvtColor`` assertion without a file
name at worst.  :func:`image_problem` says what is wrong with a file in words;
:class:`UnreadableImageError` carries the file, so that a loader can name it and a caller that
was asked to skip bad images can recognise it.
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List, Optional, Tuple

import cv2
import numpy as np
from mmengine.fileio import get


class UnreadableImageError(ValueError):
    """An image (or segment PNG) that is missing, empty or cannot be decoded.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str, what: str = 'image'):
        self.path, self.reason = path, reason
        super().__init__(f'{what} {path}: {reason}')


def decode_problem(content: bytes) -> Optional[str]:
    """Why ``content`` (a file's bytes) is no decodable image, or None."""
    if not content:
        return 'the file is empty'
    image = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return ('cannot be decoded as an image (truncated, damaged or not an image file; '
                f'{len(content)} bytes starting {content[:8]!r})')
    return None


def image_problem(path: str, backend_args: Optional[dict] = None) -> Optional[str]:
    """Why the image at ``path`` cannot be loaded, or None if it decodes."""
    try:
        content = get(path, backend_args=backend_args)
    except FileNotFoundError:
        return 'no such file'
    except OSError as error:
        return f'cannot be read: {error}'
    return decode_problem(content)


def find_unreadable(paths: Iterable[str], backend_args: Optional[dict] = None,
                    num_threads: int = 8) -> List[Tuple[str, str]]:
    """``(path, reason)`` of every file in ``paths`` that :func:`image_problem` rejects, in
    order.  Decoding runs in threads (OpenCV releases the GIL)."""
    paths = list(paths)
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        problems = list(pool.map(lambda p: image_problem(p, backend_args), paths))
    return [(p, reason) for p, reason in zip(paths, problems) if reason is not None]
