"""Export the EoMT core at inference to ONNX.

What is exported is the network of ``docs/method.md`` §1 as it runs at inference (§2, §6): masked
attention off (the released models annealed it to probability 0, so the intermediate mask
modules are skipped), only the final prediction set.  Normalised images ``(B, 3, H, W)`` in,
mask logits ``(B, Q, H/4, W/4)`` and class logits ``(B, Q, C + 1)`` out.  Decoding, resizing,
normalisation and the task's post-processing stay in Python (the inferencer's pipeline and the
adapters' ``predict``), see :mod:`mmeomt.deployment.runtime`.

The exporter is torch's ``torch.export``-based one (``torch.onnx.export(dynamo=True)``).  The
TorchScript exporter cannot translate the antialiased bicubic resize of the position embeddings
(``aten::_upsample_bicubic2d_aa``) and would fix the patch grid to the traced size.

Input sizes, once exported:

* fixed (default): exactly the export's ``(H, W)``, by default the training crop; any size works
  for the export (mmcv's patch embedding pads to a multiple of the patch size, the position
  embeddings are resized and folded into the graph), but the file then takes only that size;
* ``dynamic_size=True``: any ``H, W`` that are multiples of the patch size (16); the position
  embeddings are resized inside the graph (ONNX ``Resize`` with ``antialias=1``, opset >= 18,
  as torch's antialiased bicubic), and are the trained ones at the training crop.

Weights load through :func:`load_model`, i.e. exactly as :class:`~mmeomt.apis.EoMTInferencer`
loads them (any checkpoint format mmeomt reads; a checkpoint that does not fit fails there).
"""
import copy
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from mmeomt.version import __version__
from .metadata import INPUT_NAME, OUTPUT_NAMES, as_size, encode_metadata, require

#: the lowest opset torch's exporter and the graph need (antialiased Resize is opset 18)
MIN_OPSET = 17
DEFAULT_OPSET = 18


class FinalPrediction(nn.Module):
    """The EoMT core as exported: normalised images -> the final prediction set.

    Args:
        core: an ``EoMT`` in eval mode with masked attention off.
        dtype: the weights' dtype; inputs are cast to it and outputs back to float32, so a
            float16 export keeps float32 inputs and outputs.
    """

    def __init__(self, core: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.core = core
        self.dtype = dtype

    def forward(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        """``(B, 3, H, W)`` -> ``(B, Q, H/4, W/4)``, ``(B, Q, C + 1)`` float32."""
        mask_logits, class_logits = self.core(inputs.to(self.dtype))
        return mask_logits[-1].float(), class_logits[-1].float()


def load_model(config, checkpoint: Optional[str] = None) -> nn.Module:
    """The adapter (detector / segmentor) of ``config`` with ``checkpoint``, on the CPU.

    The single place where export loads weights: through the inferencer, so conversion of
    foreign formats, the checks that a checkpoint fits and ``dataset_meta`` (class names and
    palette, from the checkpoint or the config) are those of inference.

    Args:
        config: a config path, ``Config`` or model-zoo name (whose weights are the default).
        checkpoint: path or URL; None keeps random weights (with a warning) for a config.
            A random model gets the state of a trained one: masked attention probabilities 0
            (they start at 1 for training).

    Returns:
        the model in eval mode, with ``cfg`` and ``dataset_meta`` set.
    """
    from mmeomt.apis import EoMTInferencer
    inferencer = EoMTInferencer(config, weights=checkpoint, device='cpu')
    model = inferencer.inferencer.model
    if inferencer.weights is None:
        model.eomt.attn_mask_probs.zero_()
    return model


def model_task(model: nn.Module) -> str:
    """'panoptic', 'instance' (``EoMTDetector`` by its ``test_cfg``) or 'semantic'."""
    from mmeomt.models import EoMTDetector, EoMTSegmentor
    if isinstance(model, EoMTDetector):
        return 'panoptic' if model.test_cfg['panoptic_on'] else 'instance'
    if isinstance(model, EoMTSegmentor):
        return 'semantic'
    raise TypeError(f'ONNX export takes an EoMTDetector or EoMTSegmentor, got '
                    f'{type(model).__name__}')


def default_input_size(model: nn.Module) -> Tuple[int, int]:
    """What the test pipeline feeds the core: the window of a semantic model in window mode,
    else the training crop (the detectors' pipelines pad every image to it)."""
    if model_task(model) == 'semantic' and model.test_cfg.get('mode') == 'window':
        return (model.crop, model.crop)
    return tuple(model.eomt.backbone.img_size)


def check_exportable(core: nn.Module, input_size: Tuple[int, int], dynamic_size: bool,
                     opset: int) -> None:
    """Refuse what the exported graph of ``core`` (an ``EoMT``) would not compute as PyTorch
    does.

    Raises:
        ValueError: training mode, masked attention still on, an input size the graph cannot
            take, or an opset too low for it; the message says what to change.
    """
    if core.training:
        raise ValueError('ONNX export: the model is in training mode (masked attention and '
                         'deep supervision on, dropout active); call model.eval() first')
    probs = core.attn_mask_probs.detach().cpu().tolist()
    if core.masked_attn_enabled and any(p > 0 for p in probs):
        blocks = [len(core.backbone.layers) - core.num_blocks + i
                  for i, p in enumerate(probs) if p > 0]
        raise ValueError(
            f'ONNX export: masked attention is still on: attn_mask_probs = {probs} (blocks '
            f'{blocks}); at inference PyTorch applies it where the probability is above 0, and '
            'the export leaves it out. Export weights from the end of training, where '
            'MaskAnnealingHook has annealed every probability to 0 (as in the released '
            'models), or set them to 0 yourself if you accept the change in the predictions')
    if opset < MIN_OPSET:
        raise ValueError(f'ONNX export: opset {opset} is too low; the exporter needs >= '
                         f'{MIN_OPSET}')
    if len(input_size) != 2 or not all(isinstance(s, int) for s in input_size):
        raise ValueError(f'ONNX export: input size must be (H, W) ints, got {input_size!r}')
    patch = core.backbone.patch_size
    if min(input_size) < patch:
        raise ValueError(f'ONNX export: input size {input_size} is smaller than one '
                         f'{patch}x{patch} patch')
    if dynamic_size and any(s % patch for s in input_size):
        raise ValueError(f'ONNX export: a dynamic input size takes multiples of the patch size '
                         f'{patch}; the example size {input_size} is not (pass one that is)')
    grid = tuple(-(-s // patch) for s in input_size)
    resized = dynamic_size or grid != tuple(core.backbone.patch_resolution)
    if resized and opset < 18:
        raise ValueError(
            f'ONNX export: {"a dynamic input size" if dynamic_size else f"input size {input_size}"}'
            f' needs the position embeddings resized from the '
            f'{tuple(core.backbone.patch_resolution)} grid (antialiased bicubic, ONNX Resize with '
            f'antialias, opset >= 18); got opset {opset}. Use --opset 18 or export at the '
            f'training crop {tuple(core.backbone.img_size)}')


def export_metadata(model: nn.Module, input_size: Tuple[int, int], dynamic_size: bool,
                    batch_size: Union[int, str], fp16: bool) -> dict:
    """The values of :data:`~mmeomt.deployment.metadata.METADATA_KEYS` for ``model``."""
    dataset_meta = getattr(model, 'dataset_meta', None)
    if not dataset_meta or 'classes' not in dataset_meta or not hasattr(model, 'cfg'):
        raise ValueError('ONNX export: the model has no cfg or no dataset_meta with class '
                         'names; load it with mmeomt.deployment.load_model (as the inferencer '
                         'does)')
    cfg = model.cfg.model.data_preprocessor
    core = model.eomt
    return dict(
        task=model_task(model),
        classes=list(dataset_meta['classes']),
        palette=dataset_meta.get('palette', 'random'),
        mean=list(cfg.get('mean')), std=list(cfg.get('std')),
        bgr_to_rgb=bool(cfg.get('bgr_to_rgb', False)),
        crop=list(core.backbone.img_size),
        input_size='dynamic' if dynamic_size else list(input_size),
        size_divisor=core.backbone.patch_size,
        batch_size=batch_size,
        num_classes=core.num_classes,
        num_queries=core.num_queries,
        precision='fp16' if fp16 else 'fp32',
        producer=f'mmeomt {__version__}, torch {torch.__version__}')


def _dynamic_shapes(dynamic_batch: bool, dynamic_size: bool, patch: int):
    from torch.export import Dim
    dims = {}
    if dynamic_batch:
        dims[0] = Dim('batch', min=1)
    if dynamic_size:
        # Multiples of the patch: mmcv's patch embedding pads other sizes, a branch on the size
        # that torch.export cannot keep symbolic.
        dims[2] = patch * Dim('grid_h', min=1)
        dims[3] = patch * Dim('grid_w', min=1)
    return (dims, ) if dims else None


def _check_input_dims(program, dynamic_batch: bool, dynamic_size: bool) -> None:
    """The exporter falls back to fixing a size it could not keep symbolic; refuse that."""
    dims = list(program.model.graph.inputs[0].shape)
    want = [dynamic_batch, False, dynamic_size, dynamic_size]
    fixed = [i for i, (d, dyn) in enumerate(zip(dims, want)) if dyn and isinstance(d, int)]
    if fixed:
        raise RuntimeError(f'ONNX export: the exporter fixed input dimensions {fixed} that were '
                           f'asked to be dynamic (input shape {dims})')


def _compare(core: nn.Module, session, inputs: List[Tensor]) -> List[dict]:
    """Max abs difference between ONNX Runtime and PyTorch (the core as given) per input."""
    report = []
    for x in inputs:
        with torch.no_grad():
            mask_logits, class_logits = core(x)
        expected = (mask_logits[-1], class_logits[-1])
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        entry = dict(input_shape=list(x.shape))
        for name, e, g in zip(OUTPUT_NAMES, expected, got):
            if tuple(g.shape) != tuple(e.shape):
                raise RuntimeError(f'ONNX export: {name} of input {tuple(x.shape)} is '
                                   f'{tuple(g.shape)} in ONNX Runtime, {tuple(e.shape)} in '
                                   'PyTorch')
            entry[name] = float(np.abs(g.astype(np.float64) - e.double().numpy()).max())
        report.append(entry)
    return report


def export_core(core: nn.Module, out: Union[str, os.PathLike], input_size: Tuple[int, int],
                dynamic_batch: bool = True, dynamic_size: bool = False, batch_size: int = 1,
                opset: int = DEFAULT_OPSET, fp16: bool = False,
                metadata: Optional[dict] = None, seed: int = 0) -> List[dict]:
    """Export an ``EoMT`` core to ``out`` (see :func:`export_onnx` for the arguments).

    Args:
        metadata: values of :data:`~mmeomt.deployment.metadata.METADATA_KEYS` to store (the
            ONNX Runtime backend needs all of them; a bare graph for timing needs none).

    Returns:
        per test input its shape and the max abs difference of each output between ONNX
        Runtime (CPU) and PyTorch (``core`` as given, float32).
    """
    onnx = require('onnx')
    require('onnxscript')  # torch's exporter translates through it
    from .runtime import make_session
    input_size = as_size(input_size)
    check_exportable(core, input_size, dynamic_size, opset)
    if not dynamic_batch and batch_size < 1:
        raise ValueError(f'ONNX export: batch_size must be >= 1, got {batch_size}')
    props = encode_metadata(metadata or {})
    # A copy with masked attention switched off: with every probability at 0 (checked) the
    # same computation, without a branch on the attn_mask_probs buffer that torch.export
    # cannot trace.  float16 needs a deep copy; float32 shares the weights.
    exported = copy.deepcopy(core).half() if fp16 else copy.copy(core)
    exported.masked_attn_enabled = False
    wrapper = FinalPrediction(exported, torch.float16 if fp16 else torch.float32).eval()

    generator = torch.Generator().manual_seed(seed)
    # A batch of 2 when dynamic: torch.export fixes dimensions whose example size is 1.
    example = torch.randn(2 if dynamic_batch else batch_size, 3, *input_size,
                          generator=generator)
    patch = core.backbone.patch_size
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=UserWarning, module='torch')
        program = torch.onnx.export(
            wrapper, (example, ), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_size, patch), verbose=False)
    _check_input_dims(program, dynamic_batch, dynamic_size)
    got_opset = program.model.opset_imports.get('')
    if got_opset != opset:
        raise RuntimeError(f'ONNX export: asked for opset {opset}, the exporter produced '
                           f'{got_opset}')
    program.model.metadata_props.update(props)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.tmp', dir=out.parent))
    try:
        # The final name inside a temporary folder: external weights (> 2 GB) are referenced
        # by file name, which must stay valid once moved.
        tmp = tmp_dir / out.name
        program.save(tmp)
        onnx.checker.check_model(str(tmp), full_check=True)
        session = make_session(str(tmp), providers=['CPUExecutionProvider'])
        test_inputs = [example[:1] if dynamic_batch else example]
        if dynamic_size:
            test_inputs.append(torch.randn(1, 3, input_size[0] + patch, input_size[1] + 2 * patch,
                                           generator=generator))
        diffs = _compare(core, session, test_inputs)
        del session
        for extra in sorted(p for p in tmp_dir.iterdir() if p != tmp):
            os.replace(extra, out.parent / extra.name)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return diffs


def export_onnx(model: nn.Module, out: Union[str, os.PathLike],
                input_size: Optional[Union[int, Sequence[int]]] = None,
                dynamic_batch: bool = True, dynamic_size: bool = False, batch_size: int = 1,
                opset: int = DEFAULT_OPSET, fp16: bool = False, seed: int = 0) -> dict:
    """Export ``model``'s core to ``out``, check it and compare ONNX Runtime with PyTorch.

    Args:
        model: an ``EoMTDetector`` / ``EoMTSegmentor`` from :func:`load_model` (eval mode,
            ``cfg`` and ``dataset_meta`` set).
        out: the ``.onnx`` file; written atomically (a temporary file in the same folder,
            checked, then renamed), so it is either the finished export or untouched.  Models
            over 2 GB (protobuf's limit) put their weights beside it, in ``<out>.data``.
        input_size: ``(H, W)`` (or an int) of the example input, and the only size a fixed-size
            export takes; default :func:`default_input_size`.
        dynamic_batch: any batch size (else exactly ``batch_size`` images).
        dynamic_size: any ``H, W`` that are multiples of the patch size.
        batch_size: the batch of a fixed-batch export.
        opset: ONNX opset, >= 17 (17 only at the training crop, see :func:`check_exportable`).
        fp16: float16 weights and arithmetic inside the graph, float32 inputs and outputs.
        seed: of the random test inputs.

    Returns:
        ``path``, ``metadata`` and ``max_abs_diff`` (see :func:`export_core`).

    Raises:
        ValueError: the model cannot be exported as asked (:func:`check_exportable`).
    """
    if model.training:
        raise ValueError('ONNX export: the model is in training mode (masked attention and '
                         'deep supervision on, dropout active); call model.eval() first')
    input_size = as_size(input_size) or default_input_size(model)
    meta = export_metadata(model, input_size, dynamic_size,
                           'dynamic' if dynamic_batch else batch_size, fp16)
    diffs = export_core(model.eomt, out, input_size, dynamic_batch, dynamic_size, batch_size,
                        opset, fp16, meta, seed)
    return dict(path=str(out), metadata=meta, max_abs_diff=diffs)


def export_from_config(config, checkpoint: Optional[str], out: Union[str, os.PathLike],
                       **kwargs) -> dict:
    """:func:`load_model` then :func:`export_onnx` (``kwargs`` are its options)."""
    return export_onnx(load_model(config, checkpoint), out, **kwargs)


__all__ = ['FinalPrediction', 'load_model', 'export_core', 'export_onnx', 'export_from_config',
           'check_exportable', 'default_input_size', 'model_task', 'DEFAULT_OPSET']
