"""The EoMT core run by ONNX Runtime, a drop-in for ``EoMT`` at inference.

:class:`OnnxEoMT` takes the place of the ``eomt`` core in a detector or segmentor built from the
usual config (:func:`onnx_backend_config` swaps it in), so everything around the network is the
PyTorch path's own code: the test pipeline, the data preprocessor's normalisation, the
detector's ``EoMTFusionHead`` (panoptic, instance) and the segmentor's windowed inference
(semantic), the data samples and the visualisers.  Only the network runs in ONNX Runtime.

Execution providers: ``providers=None`` is ``['CPUExecutionProvider']``, or CUDA then CPU when
the inferencer's device is a GPU; ``'cuda'``, ``'tensorrt'`` and ``'cpu'`` are short names, and
ONNX Runtime's ``(name, options)`` pairs are passed through.  A provider that this onnxruntime
build lacks (CUDA and TensorRT need the ``onnxruntime-gpu`` package) is left out with a warning
saying so, and the session runs on the CPU.
"""
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from mmeomt.registry import MODELS
from .metadata import INPUT_NAME, OUTPUT_NAMES, decode_metadata, expected_input, require

ProviderType = Union[str, Tuple[str, Dict[str, Any]]]
PROVIDER_ALIASES = {'cpu': 'CPUExecutionProvider', 'cuda': 'CUDAExecutionProvider',
                    'tensorrt': 'TensorrtExecutionProvider', 'trt': 'TensorrtExecutionProvider'}
GPU_HINT = ('CUDAExecutionProvider and TensorrtExecutionProvider come with the onnxruntime-gpu '
            'package (installed instead of onnxruntime, with the CUDA / cuDNN / TensorRT '
            'versions of its build)')


def resolve_providers(providers: Optional[Union[ProviderType, Sequence[ProviderType]]] = None,
                      device: Optional[str] = None) -> List[ProviderType]:
    """ONNX Runtime providers to ask for, in order of preference, with the CPU last.

    Args:
        providers: names (or short names ``'cpu'``, ``'cuda'``, ``'tensorrt'``), or
            ``(name, options)`` pairs; None: CUDA then CPU for a ``'cuda[:i]'`` device (on GPU
            ``i``), else the CPU.
        device: the inferencer's device, used when ``providers`` is None.

    Returns:
        the available ones; those this build lacks are dropped with a warning.
    """
    ort = require('onnxruntime')
    if providers is None:
        providers = ['CPUExecutionProvider']
        if device is not None and str(device).startswith('cuda'):
            index = str(device).partition(':')[2]
            cuda = ('CUDAExecutionProvider', {'device_id': int(index)}) if index else \
                'CUDAExecutionProvider'
            providers = [cuda, 'CPUExecutionProvider']
    elif isinstance(providers, str) or _is_pair(providers):
        providers = [providers]
    resolved = []
    for provider in providers:
        name, options = (provider[0], dict(provider[1])) if _is_pair(provider) else \
            (provider, None)
        name = PROVIDER_ALIASES.get(str(name).lower(), name)
        resolved.append((name, options) if options else name)
    available = ort.get_available_providers()
    missing = [p for p in resolved if _name(p) not in available]
    if missing:
        warnings.warn(f'onnxruntime {ort.__version__} has no {[_name(p) for p in missing]} '
                      f'(it offers {available}); {GPU_HINT}. Running without them.')
    resolved = [p for p in resolved if _name(p) in available]
    if 'CPUExecutionProvider' not in [_name(p) for p in resolved]:
        resolved.append('CPUExecutionProvider')
    return resolved


def _is_pair(provider) -> bool:
    """``(name, options)``; a config turns the tuple into a list."""
    return isinstance(provider, (tuple, list)) and len(provider) == 2 and \
        isinstance(provider[0], str) and isinstance(provider[1], dict)


def _name(provider: ProviderType) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def make_session(file: str, providers=None, num_threads: Optional[int] = None,
                 device: Optional[str] = None):
    """An ``onnxruntime.InferenceSession`` of ``file`` set up as PyTorch runs on the CPU.

    All graph optimisations on, ``num_threads`` (default: torch's) intra-op threads and one
    inter-op thread, so that ONNX Runtime and PyTorch use the same cores, without spin-waiting
    between runs.

    Raises:
        ValueError: ONNX Runtime cannot load ``file`` (not an ONNX model, or truncated).
    """
    ort = require('onnxruntime')
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # ONNX Runtime's threads spin-wait after a run by default, taking the cores from the
    # post-processing that follows it in the same process.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    wanted = resolve_providers(providers, device)
    try:
        session = ort.InferenceSession(str(file), options, providers=wanted)
    except Exception as error:  # onnxruntime's own exception types are not importable by name
        raise ValueError(f'{file}: ONNX Runtime cannot load it as a model: {error}') from None
    got = session.get_providers()
    lost = [_name(p) for p in wanted if _name(p) not in got]
    if lost:  # e.g. CUDA is in the build but its libraries could not be loaded
        warnings.warn(f'{file}: ONNX Runtime could not start {lost} (see its log above); '
                      f'running on {got}. {GPU_HINT}.')
    return session


@MODELS.register_module()
class OnnxEoMT(nn.Module):
    """The EoMT core as an ONNX Runtime session, for inference only.

    Called as ``EoMT`` at inference: normalised images ``(B, 3, H, W)`` in, one-element lists
    ``[mask_logits (B, Q, H/4, W/4)]`` and ``[class_logits (B, Q, C + 1)]`` out (the final
    prediction set; masked attention is not part of an export), float32 on the input's device.
    Tensors pass through host memory (numpy) whatever the provider.

    Args:
        file: an ``.onnx`` file written by ``tools/deployment/export_onnx.py``.
        providers: see :func:`resolve_providers`.
        num_threads: ONNX Runtime intra-op threads (default: torch's).
        device: the device the rest of the model runs on (chooses default providers).
        expected: metadata values the config implies (``task``, ``num_classes``, ``mean``,
            ...); a file that disagrees is refused.

    Attributes:
        meta: the file's metadata (:data:`~mmeomt.deployment.metadata.METADATA_KEYS`).
    """

    def __init__(self, file: str, providers=None, num_threads: Optional[int] = None,
                 device: Optional[str] = None, expected: Optional[dict] = None):
        super().__init__()
        self.file = str(file)
        self.session = make_session(self.file, providers, num_threads, device)
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = decode_metadata(props, source=self.file)
        self._check(expected or {})
        self.num_classes = self.meta['num_classes']
        self.num_queries = self.meta['num_queries']
        self.masked_attn_enabled = False

    def _check(self, expected: dict) -> None:
        wrong = []
        for key, value in expected.items():
            have = self.meta[key]
            same = np.allclose(have, value) if key in ('mean', 'std') else have == value
            if not same:
                wrong.append(f'{key}: {have!r} in the file, {value!r} in the config')
        if wrong:
            raise ValueError(f'{self.file} was not exported from this config (or its model '
                             'differs):\n  ' + '\n  '.join(wrong))

    @property
    def checkpoint_meta(self) -> dict:
        """The file's class names and palette in a checkpoint's layout (``meta.dataset_meta``),
        as the inferencers read them."""
        palette = self.meta['palette']
        if isinstance(palette, list):  # JSON made the colours lists; the visualisers need tuples
            palette = [tuple(colour) for colour in palette]
        return dict(meta=dict(dataset_meta=dict(classes=tuple(self.meta['classes']),
                                                palette=palette)))

    def check_input(self, inputs: Tensor) -> None:
        """Raise ``ValueError`` (naming the file and what it takes) for an input it cannot run."""
        shape = tuple(inputs.shape)
        ok = len(shape) == 4 and shape[1] == 3
        if ok and self.meta['input_size'] == 'dynamic':
            ok = all(s % self.meta['size_divisor'] == 0 and s > 0 for s in shape[2:])
        elif ok:
            ok = list(shape[2:]) == list(self.meta['input_size'])
        if not ok:
            raise ValueError(
                f'{self.file} takes {expected_input(self.meta)}; got an input of {shape}. '
                'Export again with --input-size H W or --dynamic-size (the test pipeline '
                f'feeds the crop {self.meta["crop"]})')

    def forward(self, inputs: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        """``(B, 3, H, W)`` -> ``([mask_logits], [class_logits])`` (see the class docstring).

        A fixed-batch export runs the batch in pieces of its size (the last one padded with
        copies of the last image, whose outputs are dropped).
        """
        self.check_input(inputs)
        array = np.ascontiguousarray(inputs.detach().float().cpu().numpy())
        step = len(array) if self.meta['batch_size'] == 'dynamic' else self.meta['batch_size']
        outputs = [[], []]
        for start in range(0, len(array), step):
            piece = array[start:start + step]
            num = len(piece)
            if num < step:
                piece = np.concatenate([piece, np.repeat(piece[-1:], step - num, axis=0)])
            for out, value in zip(outputs, self.session.run(list(OUTPUT_NAMES),
                                                            {INPUT_NAME: piece})):
                out.append(value[:num])
        mask_logits, class_logits = (torch.from_numpy(np.concatenate(o)).to(inputs.device)
                                     for o in outputs)
        return [mask_logits], [class_logits]


def config_task(cfg) -> str:
    """The task a config's model runs: 'semantic' (mmseg scope) or 'panoptic' / 'instance'."""
    if cfg.get('default_scope') == 'mmseg':
        return 'semantic'
    return 'panoptic' if cfg.model.get('test_cfg', {}).get('panoptic_on', True) else 'instance'


def onnx_backend_config(cfg, file: Optional[str], providers=None,
                        num_threads: Optional[int] = None, device: Optional[str] = None):
    """``cfg`` with its core replaced by :class:`OnnxEoMT` of ``file`` (a copy).

    Raises:
        ValueError: no ``.onnx`` file given.
        FileNotFoundError: ``file`` does not exist.
    """
    import copy
    import os.path as osp
    if not file:
        raise ValueError("backend='onnxruntime' needs weights=<an .onnx file>; export one with "
                         'tools/deployment/export_onnx.py CONFIG CHECKPOINT --out model.onnx')
    if '://' in str(file) or not osp.isfile(file):
        raise FileNotFoundError(f"backend='onnxruntime': {file} is not a local file (export "
                                'one with tools/deployment/export_onnx.py)')
    cfg = copy.deepcopy(cfg)
    core = cfg.model.eomt
    preprocessor = cfg.model.get('data_preprocessor', {})
    expected = dict(task=config_task(cfg), num_classes=core.num_classes,
                    bgr_to_rgb=bool(preprocessor.get('bgr_to_rgb', False)))
    if 'num_queries' in core:
        expected['num_queries'] = core.num_queries
    for key in ('mean', 'std'):
        if preprocessor.get(key) is not None:
            expected[key] = list(preprocessor[key])
    cfg.model.eomt = dict(type='mmeomt.OnnxEoMT', file=str(file), providers=providers,
                          num_threads=num_threads, device=device, expected=expected)
    return cfg


__all__ = ['OnnxEoMT', 'make_session', 'resolve_providers', 'onnx_backend_config',
           'config_task']
