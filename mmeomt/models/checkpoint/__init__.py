"""Checkpoints of EoMT models: every format in, one hook, one loading policy.

**Formats** (:mod:`.formats`): a table, :data:`FORMATS`, of the layouts we read, per kind —
``'backbone'`` (a ViT alone: mmeomt, mmpretrain, the original DINOv2 release, timm,
transformers; :mod:`.dinov2`) and ``'eomt'`` (a whole model: the authors' released checkpoints,
transformers' ``EomtForUniversalSegmentation``, ours under any prefix; :mod:`.eomt`).  Each
entry says how it is recognised from its keys, its key rules, what is finished after renaming
and how the weights are fitted to the model (patch-embedding and position-grid resampling,
the [CLS] position folded into the [CLS] token).

**On load** (:mod:`.hook`): the outermost EoMT module of a model (adapter, core, or a ViT on
its own) carries one ``load_state_dict`` pre-hook that converts any format of the table and fits
it, so ``load_from``, ``resume``, ``init_cfg``, the inferencers and plain ``load_state_dict``
take every format.  ``load_state_dict(strict=False)`` behaves as torch documents: keys that do
not fit are reported in ``missing_keys`` / ``unexpected_keys``, not raised; with ``strict=True``
(torch's default) the hook raises ``ValueError`` naming them.  Our loading paths load strictly
and say so: ``EoMTRunner.load_checkpoint`` (``load_from``, ``resume``), :func:`load_pretrained`
(our modules' ``Pretrained`` init_cfg, ``strict=True`` unless the init_cfg says otherwise) and
the inferencers.  ``skip_mismatched`` is the one deliberate way to keep initial values.

**Loading policy** (:mod:`.loading`, the one way our paths read a file or URL):

* ``*.safetensors`` are read with ``safetensors`` (no code can run);
* torch files with ``torch.load(weights_only=True)``: tensors and plain containers only;
* a torch file that holds more (an mmengine training checkpoint: its message hub) is refused
  with a ``RuntimeError`` that says so, unless the caller opts in with ``allow_pickle=True``;
  then it is unpickled in full and a warning is logged each time.  The opt-ins:
  ``EoMTRunner`` for *local* ``load_from`` / ``resume`` files (the runner's own checkpoints,
  as ``tools/train.py --resume`` and ``tools/test.py CKPT`` pass them), and whoever passes
  ``allow_pickle=True`` (``EoMTInferencer``, ``demo/image_demo.py --allow-pickle``, a
  ``Pretrained`` init_cfg);
* a file from an ``http(s)://`` URL is never unpickled in full; it is downloaded once into one
  cache path per URL (:func:`url_cache_path`: every released EoMT checkpoint is called
  ``pytorch_model.bin``, which mmengine's cache by file name would mix up), atomically, rank 0
  first in a distributed run;
* a file that is no checkpoint at all fails with a ``ValueError`` naming it and saying what it
  looks like (empty, truncated, HTML...);
* other schemes (``s3://``, ``open-mmlab://``...) go to mmengine's ``CheckpointLoader``.

Nothing is registered with mmengine: ``import mmeomt`` leaves ``CheckpointLoader`` and
``mmengine.fileio`` as they are, so other models in the same process load as without mmeomt.
Writing checkpoint files atomically is :mod:`mmeomt.utils.atomic_io`; converting files offline
is ``tools/model_converters/``.

**How to add a format** (e.g. a DINOv3 ViT):

1. Write its key rules: a list of ``(regex on the key without prefix, replacement)`` from the
   layout's key names to ours, ``None`` to drop a key that is not part of the model; steps that
   need several keys at once (fusing q/k/v) go into ``finish``.
2. Write ``recognise(state_dict) -> prefix or None``; :func:`find_anchor` finds the prefix of
   a key only that layout has (its patch-embedding kernel, say).  Formats are tried in table
   order: if the new layout shares its anchor with an existing one (timm DINOv3 and timm
   DINOv2 both have ``patch_embed.proj.weight``), make ``recognise`` check what tells them
   apart and register it ``before`` the other.
3. Give it a ``fit``: :func:`.dinov2.fit_dinov2` (resampling, [CLS] fold) for a ViT with our
   geometry, or your own for another backbone (the target is the module being loaded).
4. ``register_format(CheckpointFormat(name=..., kind='backbone', recognise=..., rules=...,
   finish=..., fit=..., description=...))`` in a module of this package, imported below.  A
   whole-model layout is ``kind='eomt'`` with ``backbone=`` the regex of its ViT keys (they go
   through the backbone table) and rules for the rest (queries, heads, upscale).  Delta
   checkpoints that only hold what fine-tuning changed are a ``fit`` that adds the base
   weights, or a tool that does so before loading.
5. Test it as ``tests/test_models/test_checkpoint`` does: write a model's state dict in the
   new layout from the layout's published key names (``dinov2_formats.py``), convert back,
   compare exactly; and against the reference implementation where one can run offline.
"""
# (register the formats; dinov3 places its entries before those of dinov2 and eomt)
from . import dinov2, eomt  # noqa: F401, I001
from . import dinov3  # noqa: F401, E402
from .dinov2 import DINOV2_FORMATS, convert_dinov2, detect_dinov2_format, fit_dinov2
from .dinov3 import (DINOV3_FORMATS, convert_dinov3, convert_eomt_dinov3_checkpoint,
                     detect_dinov3_format, detect_eomt_dinov3_format)
from .eomt import EOMT_FORMATS, convert_eomt_checkpoint, detect_eomt_checkpoint_format
from .formats import (FORMATS, CheckpointFormat, convert, detect_format, find_anchor,
                      get_format, register_format)
from .hook import (attach_checkpoint_hook, fit_backbone_state, fit_model_state,
                   init_weights_then_load, reorder_class_head)
from .loading import (cache_root, checkpoint_problem, download, is_url, load_checkpoint,
                      load_checkpoint_file, load_checkpoint_to_model, load_pretrained,
                      not_a_checkpoint, state_dict_of, url_cache_path)

__all__ = [
    'FORMATS', 'CheckpointFormat', 'register_format', 'get_format', 'detect_format', 'convert',
    'find_anchor', 'DINOV2_FORMATS', 'convert_dinov2', 'detect_dinov2_format', 'fit_dinov2',
    'DINOV3_FORMATS', 'convert_dinov3', 'convert_eomt_dinov3_checkpoint', 'detect_dinov3_format',
    'detect_eomt_dinov3_format',
    'EOMT_FORMATS', 'convert_eomt_checkpoint', 'detect_eomt_checkpoint_format',
    'attach_checkpoint_hook', 'fit_backbone_state', 'fit_model_state',
    'init_weights_then_load', 'reorder_class_head', 'cache_root', 'checkpoint_problem',
    'download', 'is_url', 'load_checkpoint', 'load_checkpoint_file', 'load_checkpoint_to_model',
    'load_pretrained', 'not_a_checkpoint', 'state_dict_of', 'url_cache_path'
]
