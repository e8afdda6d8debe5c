"""One-call inference: a model-zoo name (or config + weights) and images in, results and PNGs out.

EoMT models run under their host library's inferencer: mmdet's ``DetInferencer`` for panoptic
and instance configs (``default_scope = 'mmdet'``), mmseg's ``MMSegInferencer`` for semantic
ones.  Two small subclasses fit them to EoMT's configs and checkpoints:

* class names and palette come from the checkpoint's ``meta.dataset_meta`` when it has one and
  otherwise from the config's test dataset (the authors' checkpoints carry no metadata; the
  host inferencers would fall back to COCO's or Cityscapes' classes);
* annotation loading is dropped from the test pipeline (the EoMT test pipelines load ground
  truth for evaluation, which plain images do not have);
* weights are read by mmeomt's loading policy (URLs cached per URL, weights-only unpickling
  unless ``allow_pickle=True``) and loaded strictly, converted from the authors' and
  transformers' formats on load (:mod:`mmeomt.models.checkpoint`).
* with ``backend='onnxruntime'`` the core is an exported ``.onnx`` file run by ONNX Runtime
  (:mod:`mmeomt.deployment.runtime`); pipeline, post-processing and visualisation stay the same
  code.

:class:`EoMTInferencer` picks the right one from the config and resolves model-zoo names
(:mod:`mmeomt.apis.model_zoo`)::

    from mmeomt.apis import EoMTInferencer
    inferencer = EoMTInferencer('eomt_vit-l_8xb2-12e_coco-panoptic-640')
    result = inferencer('demo.jpg', out_dir='outputs')
    result['predictions'][0].pred_panoptic_seg   # an mmdet DetDataSample
    result['out_files']                          # ['outputs/demo.png']

``inferencer(images, tiled=True)`` segments images larger than the model's crop in overlapping
crop-sized tiles at their own resolution and merges them (:mod:`mmeomt.apis.tiling`).
"""
import copy
import os
import os.path as osp
import warnings
from typing import List, Optional, Sequence, Union

import mmcv
import numpy as np
from mmdet.apis import DetInferencer
from mmengine.config import Config
from mmengine.registry import DATASETS, MODELS, init_default_scope
from mmseg.apis import MMSegInferencer
from torch import nn

from mmeomt.models.checkpoint import load_checkpoint_file, load_checkpoint_to_model
from mmeomt.deployment.runtime import OnnxEoMT, onnx_backend_config
from mmeomt.registry import INFERENCERS
from .inputs import prepare_inputs
from .model_zoo import get_model_info
from .tiling import DEFAULT_OVERLAP, TiledPredictor, check_overlap

InputsType = Union[str, np.ndarray, Sequence[Union[str, np.ndarray]]]
# Transforms that read ground truth; an inference pipeline has none to read.
ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadPanopticAnnotations', 'LoadDepthAnnotation')


def _short_type(transform: dict) -> str:
    name = transform.get('type', '')
    return name.split('.')[-1] if isinstance(name, str) else getattr(name, '__name__', '')


def _dataset_meta(cfg: Config, checkpoint: Optional[dict]) -> dict:
    """``dataset_meta`` from the checkpoint if it has one, else the config's test dataset."""
    meta = checkpoint.get('meta', {}) if isinstance(checkpoint, dict) else {}
    if isinstance(meta, dict) and 'dataset_meta' in meta:
        return {k.lower(): v for k, v in meta['dataset_meta'].items()}
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset_cfg['lazy_init'] = True  # metainfo only: no annotation file needed
    return dict(DATASETS.build(dataset_cfg).metainfo)


def drop_empty_panoptic(sample, num_classes: int):
    """``sample`` (a ``DetDataSample``) as mmdet's ``DetLocalVisualizer`` can draw it.

    mmdet's panoptic drawing fails on a prediction without any segment (every pixel is void,
    ``num_classes``: it stacks an empty list of areas); such a prediction is left out (on a
    copy), so the image is drawn without it.
    """
    if 'pred_panoptic_seg' in sample and bool(
            (sample.pred_panoptic_seg.sem_seg == num_classes).all()):
        sample = sample.clone()
        del sample.pred_panoptic_seg
    return sample


def _load_weights(model: nn.Module, checkpoint: Optional[dict],
                  weights: Optional[str]) -> Optional[dict]:
    """Load ``checkpoint`` strictly; returns what holds the class names (for
    :func:`_dataset_meta`)."""
    if isinstance(getattr(model, 'eomt', None), OnnxEoMT):  # the weights are in the ONNX file
        return model.eomt.checkpoint_meta
    if checkpoint is None:
        warnings.warn('No weights given: the predictions come from a randomly initialised model')
    else:
        load_checkpoint_to_model(model, checkpoint, strict=True, filename=str(weights))
    return checkpoint


class _EoMTWeights:
    """Reads ``weights`` with mmeomt's loading policy instead of mmengine's loaders."""
    allow_pickle = False
    weights: Optional[str] = None

    def _init_model(self, cfg: Config, weights: Optional[str], device: str = 'cpu') -> nn.Module:
        # mmengine's BaseInferencer._init_model, with the checkpoint read by
        # load_checkpoint_file (and no config taken from the checkpoint: ours come with one).
        self.weights = weights
        checkpoint = None if weights is None else load_checkpoint_file(
            weights, map_location='cpu', allow_pickle=self.allow_pickle)
        model = MODELS.build(cfg.model)
        model.cfg = cfg
        self._load_weights_to_model(model, checkpoint, cfg)
        return model.to(device).eval()


@INFERENCERS.register_module()
class EoMTDetInferencer(_EoMTWeights, DetInferencer):
    """mmdet's ``DetInferencer`` for EoMT panoptic and instance models (see module docstring).

    Args:
        model: config path, ``Config`` or dict (mmdet scope).
        weights: checkpoint path or URL in any format EoMT loads; None keeps random weights.
        device: e.g. ``'cuda:0'``; None picks the available accelerator.
        palette: ``'none'`` (the dataset's), ``'random'`` or a dataset name, as mmdet.
        show_progress: show a progress bar.
        allow_pickle: unpickle a local checkpoint in full if it holds more than tensors (an
            mmengine training checkpoint); only for files you trust.
    """

    def __init__(self, model, weights: Optional[str] = None, device: Optional[str] = None,
                 palette: str = 'none', show_progress: bool = False,
                 allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle
        super().__init__(model=model, weights=weights, device=device, scope='mmdet',
                         palette=palette, show_progress=show_progress)

    def _load_weights_to_model(self, model: nn.Module, checkpoint: Optional[dict],
                               cfg: Config) -> None:
        checkpoint = _load_weights(model, checkpoint, self.weights)
        model.dataset_meta = _dataset_meta(cfg, checkpoint)
        if self.palette != 'none':
            model.dataset_meta['palette'] = self.palette
        model.dataset_meta.setdefault('palette', 'random')

    def _init_pipeline(self, cfg: Config):
        cfg = copy.deepcopy(cfg)
        pipeline = cfg.test_dataloader.dataset.pipeline
        cfg.test_dataloader.dataset.pipeline = [
            t for t in pipeline if _short_type(t) not in ANNOTATION_LOADERS]
        return super()._init_pipeline(cfg)

    def visualize(self, inputs: list, preds: list, **kwargs) -> Optional[List[np.ndarray]]:
        num_classes = len(self.model.dataset_meta['classes'])
        drawable = [drop_empty_panoptic(pred, num_classes) for pred in preds]
        return super().visualize(inputs, drawable, **kwargs)


@INFERENCERS.register_module()
class EoMTSegInferencer(_EoMTWeights, MMSegInferencer):
    """mmseg's ``MMSegInferencer`` for EoMT semantic models (see module docstring).

    Args:
        model: config path, ``Config`` or dict (mmseg scope).
        weights: checkpoint path or URL in any format EoMT loads; None keeps random weights.
        device: e.g. ``'cuda:0'``; None picks the available accelerator.
        show_progress: show a progress bar.
        allow_pickle: unpickle a local checkpoint in full if it holds more than tensors (an
            mmengine training checkpoint); only for files you trust.
    """

    def __init__(self, model, weights: Optional[str] = None, device: Optional[str] = None,
                 show_progress: bool = False, allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle
        super().__init__(model=model, weights=weights, device=device, scope='mmseg')
        self.show_progress = show_progress

    def _load_weights_to_model(self, model: nn.Module, checkpoint: Optional[dict],
                               cfg: Config) -> None:
        checkpoint = _load_weights(model, checkpoint, self.weights)
        meta = _dataset_meta(cfg, checkpoint)
        # The visualiser takes exactly these two.
        model.dataset_meta = dict(classes=meta.get('classes'), palette=meta.get('palette'))


def _load_config(model: Union[str, Config, dict]) -> Config:
    if isinstance(model, Config):
        return copy.deepcopy(model)
    if isinstance(model, dict):
        return Config(copy.deepcopy(dict(model)))
    return Config.fromfile(model)


class EoMTInferencer:
    """EoMT inference for all three tasks: images in, data samples and visualisations out.

    Args:
        model: a model-zoo name or alias (``configs/eomt/metafile.yml``, e.g.
            ``'eomt_vit-l_8xb2-12e_coco-panoptic-640'`` or ``'coco_panoptic_eomt_large_640'``),
            a config path, or a ``Config``.
        weights: checkpoint path or URL; default: the model zoo's weights for a name, none
            (random weights, with a warning) for a config.  The authors' released
            ``pytorch_model.bin``, transformers' and mmeomt checkpoints all load.
        device: e.g. ``'cpu'``, ``'cuda:0'``; None picks the available accelerator.
        metafile: model index or metafile to resolve names from (default: mmeomt's own).
        show_progress: show a progress bar.
        allow_pickle: a local checkpoint that holds more than tensors (an mmengine training
            checkpoint, ``work_dirs/.../iter_N.pth``) is unpickled in full, with a warning,
            instead of refused; only for files you trust.  Never applies to URLs.
        backend: ``'pytorch'``, or ``'onnxruntime'`` to run the network from ``weights``, an
            ``.onnx`` file of ``tools/deployment/export_onnx.py`` exported from this config
            (checked against it); the rest is the PyTorch path's code, with the same results.
        providers: ONNX Runtime execution providers, e.g. ``'cuda'`` or
            ``['TensorrtExecutionProvider', 'CUDAExecutionProvider']`` (default: the CPU, or
            CUDA for a GPU ``device``); those the installed onnxruntime lacks are left out with
            a warning (:func:`mmeomt.deployment.resolve_providers`).

    The config's ``default_scope`` picks the host inferencer: :class:`EoMTDetInferencer`
    (``'mmdet'``: panoptic, instance) or :class:`EoMTSegInferencer` (``'mmseg'``: semantic),
    available as :attr:`inferencer`.
    """

    def __init__(self, model: Union[str, Config, dict], weights: Optional[str] = None,
                 device: Optional[str] = None, metafile: Optional[str] = None,
                 show_progress: bool = False, allow_pickle: bool = False,
                 backend: str = 'pytorch', providers=None) -> None:
        self.model_info = None
        if isinstance(model, str) and not osp.isfile(model):
            try:
                self.model_info = get_model_info(model, metafile)
            except KeyError as error:
                raise ValueError(f'EoMTInferencer: model {model!r} is neither a config file nor '
                                 f'a model-zoo name: {error.args[0]}') from None
            model = self.model_info['config']
            weights = weights if weights is not None else self.model_info['weights']
        cfg = _load_config(model)
        self.backend, self.weights = backend, weights
        if backend == 'onnxruntime':
            cfg, weights = onnx_backend_config(cfg, weights, providers, device=device), None
        elif backend != 'pytorch' or providers is not None:
            raise ValueError(f"EoMTInferencer: backend must be 'pytorch' or 'onnxruntime' "
                             f"(providers only with 'onnxruntime'), got {backend!r}")
        scope = cfg.get('default_scope')
        if scope == 'mmdet':
            self.inferencer = EoMTDetInferencer(cfg, weights, device,
                                                show_progress=show_progress,
                                                allow_pickle=allow_pickle)
        elif scope == 'mmseg':
            self.inferencer = EoMTSegInferencer(cfg, weights, device,
                                                show_progress=show_progress,
                                                allow_pickle=allow_pickle)
        else:
            raise ValueError(f"EoMTInferencer: the config's default_scope must be 'mmdet' "
                             f"(panoptic, instance) or 'mmseg' (semantic), got {scope!r}")
        self.scope = scope

    @property
    def dataset_meta(self) -> dict:
        """Class names and palette used for the visualisations."""
        return self.inferencer.model.dataset_meta

    def __call__(self, inputs: InputsType, out_dir: Optional[str] = None, batch_size: int = 1,
                 return_vis: bool = False, pred_score_thr: float = 0.3,
                 opacity: float = 0.5, skip_bad_images: bool = False, tiled: bool = False,
                 tile_overlap: float = DEFAULT_OVERLAP) -> dict:
        """Predict and, when asked, visualise.

        Args:
            inputs: an image path, a folder of images, a BGR ``(H, W, 3)`` uint8 array, or a
                list of paths/arrays.
            out_dir: where to write one visualisation PNG per image (``<image stem>.png``,
                ``<index>.png`` for arrays); None writes nothing.
            batch_size: images per forward pass; the predictions do not depend on it.
            return_vis: also return the visualisations (they are drawn whenever ``out_dir``
                is given); as in mmdet's and mmseg's inferencers, nothing is drawn otherwise.
            pred_score_thr: instance models draw instances scoring at least this.
            opacity: semantic overlays: weight of the colour map over the image.
            skip_bad_images: leave image files that are missing or cannot be decoded out
                (listed in ``skipped``) instead of stopping; this decodes every file once
                more to check it.  Arrays must be ``(H, W[, 1|3|4])`` uint8 or uint16
                images (:func:`mmeomt.apis.inputs.as_bgr_image`) either way.
            tiled: panoptic and instance models: segment an image larger than the model's crop
                in overlapping crop-sized tiles at its own resolution and merge them
                (:mod:`mmeomt.apis.tiling`); ``batch_size`` then counts tiles.  Semantic models
                already slide crop-sized windows over the image and refuse it.
            tile_overlap: with ``tiled``, the fraction of a tile shared with its neighbour,
                in ``[0, 1)``.

        Returns:
            ``predictions``: data samples (mmdet ``DetDataSample`` with ``pred_panoptic_seg``
            or ``pred_instances``; mmseg ``SegDataSample`` with ``pred_sem_seg``);
            ``visualization``: RGB ``(H, W, 3)`` uint8 arrays (panoptic colours with class
            names, instance masks with labels and scores, semantic overlays with names), or
            None when nothing was drawn; ``out_files``: the PNGs written; ``skipped``:
            ``dict(index, input, reason)`` of each file left out.
        """
        if tiled:
            if self.scope != 'mmdet':
                raise ValueError(
                    'EoMTInferencer: tiled=True is for panoptic and instance models; semantic '
                    "models already slide crop-sized windows along the image (test_cfg.mode="
                    "'window', docs/method.md §6): call without tiled")
            check_overlap(tile_overlap)
        inferencer = self.inferencer
        inputs = inferencer._inputs_to_list(inputs)
        if not inputs:
            raise ValueError('EoMTInferencer: no images given (an empty list or folder)')
        inputs, skipped = prepare_inputs(inputs, skip_bad_images=skip_bad_images,
                                         check_paths=skip_bad_images)
        if not inputs:
            raise ValueError(f'EoMTInferencer: none of the {len(skipped)} images could be '
                             f'read: {skipped}')
        draw = bool(out_dir) or return_vis
        init_default_scope(self.scope)
        if tiled:
            preds = TiledPredictor(inferencer, tile_overlap)(inputs, batch_size=batch_size)
        else:
            preds = []
            for data in inferencer.preprocess(inputs, batch_size=batch_size):
                if self.scope == 'mmdet':  # mmdet's batches are (original inputs, data)
                    data = data[1]
                preds.extend(inferencer.forward(data))
        vis = None
        if draw and self.scope == 'mmdet':
            vis = inferencer.visualize(inputs, preds, return_vis=True, no_save_vis=True,
                                       pred_score_thr=pred_score_thr)
        elif draw:
            vis = inferencer.visualize(inputs, preds, return_vis=True, opacity=opacity,
                                       with_labels=True)
        out_files = self._write(inputs, vis, out_dir) if out_dir else []
        return dict(predictions=preds, visualization=vis, out_files=out_files, skipped=skipped)

    @staticmethod
    def _write(inputs: list, vis: List[np.ndarray], out_dir: str) -> List[str]:
        os.makedirs(out_dir, exist_ok=True)
        files, used = [], set()
        for i, (item, image) in enumerate(zip(inputs, vis)):
            stem = osp.splitext(osp.basename(item))[0] if isinstance(item, str) else f'{i:06d}'
            name, n = stem, 1
            while name in used:  # the same stem in two folders
                name, n = f'{stem}_{n}', n + 1
            used.add(name)
            path = osp.join(out_dir, name + '.png')
            mmcv.imwrite(image[..., ::-1], path)  # RGB -> BGR for OpenCV
            files.append(path)
        return files


__all__ = ['EoMTInferencer', 'EoMTDetInferencer', 'EoMTSegInferencer']
