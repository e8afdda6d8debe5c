"""Encoding and writing the synthetic dataset's files (shared by the format writers)."""
import json
from io import BytesIO
from typing import List

import numpy as np
from PIL import Image

JPEG_QUALITY = 92


def encode_png(array: np.ndarray) -> bytes:
    """``(H, W)`` or ``(H, W, 3)`` uint8 as PNG bytes (fixed settings: the bytes are stable)."""
    buf = BytesIO()
    Image.fromarray(array).save(buf, format='PNG', optimize=False, compress_level=6)
    return buf.getvalue()


def encode_jpeg(array: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 RGB as JPEG bytes."""
    buf = BytesIO()
    Image.fromarray(array).save(buf, format='JPEG', quality=JPEG_QUALITY)
    return buf.getvalue()


def write_bytes(path: str, data: bytes) -> None:
    # Not atomic on its own: the whole dataset is built in a temporary directory that is
    # renamed into place when complete (generate_synthetic_dataset).
    with open(path, 'wb') as f:
        f.write(data)


def dump_json(path: str, obj: dict) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, separators=(',', ':'))


def bbox(mask: np.ndarray) -> List[int]:
    """COCO ``[x, y, w, h]`` of the pixels of ``mask`` (H, W)."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]
