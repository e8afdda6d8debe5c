"""What an exported EoMT ONNX file says about itself, and the optional packages deployment needs.

The exported graph is the EoMT core at inference: normalised images ``inputs (B, 3, H, W)``
float32 in, the final prediction set out: ``mask_logits (B, Q, H/4, W/4)`` and ``class_logits
(B, Q, C + 1)`` float32.  Everything else a user needs to run it is in the file's
``metadata_props``, one JSON value per key (:data:`METADATA_KEYS`), so that the file can be used
without the config (e.g. by another runtime) and the ONNX Runtime backend can refuse a config
that does not match it.
"""
import importlib
import json
from typing import Any, Dict, Mapping, Optional, Sequence, Union

INPUT_NAME = 'inputs'
OUTPUT_NAMES = ('mask_logits', 'class_logits')

#: metadata keys and what their JSON values mean
METADATA_KEYS = {
    'task': "'panoptic', 'instance' or 'semantic'",
    'classes': 'class names, in the order of the class logits (the last logit is "no object")',
    'palette': "class colours [[r, g, b], ...], or 'random'",
    'mean': 'per-channel mean subtracted from the 0-255 pixels (after bgr_to_rgb)',
    'std': 'per-channel std the pixels are divided by',
    'bgr_to_rgb': 'whether the BGR image (as OpenCV reads it) is turned into RGB first',
    'crop': 'the training crop [H, W] (the position-embedding grid is crop / patch_size)',
    'input_size': "[H, W] of a fixed-size export, or 'dynamic'",
    'size_divisor': 'a dynamic-size export takes H and W that are multiples of this',
    'batch_size': "'dynamic', or the number of images the graph takes at once",
    'num_classes': 'C (the class logits hold C + 1)',
    'num_queries': 'Q',
    'precision': "'fp32', or 'fp16' (float16 weights and arithmetic; inputs and outputs stay "
                 'float32)',
    'producer': 'mmeomt and torch versions that exported the file',
}

DEPLOY_REQUIREMENTS = 'pip install -r requirements/deploy.txt  (onnx, onnxruntime, onnxscript)'


def require(module: str):
    """Import an optional deployment package, or fail saying how to install it.

    mmeomt itself does not depend on them (``setup.py``); only export and the ONNX Runtime
    backend do.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f'mmeomt deployment needs the package {module.split(".")[0]!r}, which '
                          f'cannot be imported ({error}); {DEPLOY_REQUIREMENTS}') from None


def encode_metadata(values: Mapping[str, Any]) -> Dict[str, str]:
    """``{key: json.dumps(value)}`` for the keys of :data:`METADATA_KEYS`.

    Raises:
        KeyError: a key that is not one of them (a typo would write a field no reader knows).
    """
    unknown = sorted(set(values) - set(METADATA_KEYS))
    if unknown:
        raise KeyError(f'unknown EoMT ONNX metadata keys {unknown}; known: {list(METADATA_KEYS)}')
    return {key: json.dumps(_plain(value)) for key, value in values.items()}


def decode_metadata(props: Mapping[str, str], source: str = 'the ONNX file') -> Dict[str, Any]:
    """The JSON values of an exported file's metadata.

    Raises:
        ValueError: the file was not exported by mmeomt (keys are missing) or a value is not
            JSON; the message names ``source``.
    """
    missing = [key for key in METADATA_KEYS if key not in props]
    if missing:
        raise ValueError(f'{source} lacks the EoMT metadata {missing}: it was not written by '
                         'tools/deployment/export_onnx.py (or by an older version of it)')
    values = {}
    for key in METADATA_KEYS:
        try:
            values[key] = json.loads(props[key])
        except ValueError:
            raise ValueError(f'{source}: metadata {key!r} is not JSON: {props[key]!r}') from None
    return values


def expected_input(meta: Mapping[str, Any]) -> str:
    """The inputs a file takes, in words, e.g. ``'(B, 3, 640, 640), any B'``."""
    batch = 'any B' if meta['batch_size'] == 'dynamic' else f'B = {meta["batch_size"]}'
    if meta['input_size'] == 'dynamic':
        d = meta['size_divisor']
        return f'(B, 3, H, W) with H and W multiples of {d}, {batch}'
    h, w = meta['input_size']
    return f'(B, 3, {h}, {w}), {batch}'


def _plain(value):
    """Tuples, numpy/torch scalars and arrays -> JSON-able lists and numbers."""
    if hasattr(value, 'tolist'):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def as_size(value: Optional[Union[int, Sequence[int]]]) -> Optional[tuple]:
    """``640`` or ``(640, 640)`` -> ``(640, 640)``; None stays None."""
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return tuple(value)
