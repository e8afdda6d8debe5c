"""Whole-model checkpoints on load: recognise, convert, then check that they fit.

``EoMTDetector`` and ``EoMTSegmentor`` run :func:`fit_eomt_checkpoint` as a ``load_state_dict``
pre-hook.  mmengine's ``load_checkpoint`` (``load_from``, ``resume``, ``init_cfg`` Pretrained on
the whole model, the inferencers) and torch's ``load_state_dict`` both call every module's
``_load_from_state_dict``, which runs these hooks, outermost module first.  So any checkpoint
of the formats of :mod:`mmeomt.models.convert` loads directly:

* our own (``eomt.backbone.*``, ``eomt.queries.weight``, ...): used as it is (resuming);
* the authors' released ``pytorch_model.bin`` (``network.*``), transformers'
  ``EomtForUniversalSegmentation``, or a bare ``EoMT`` core (no ``eomt.`` prefix): converted;
* ViT weights are then fitted to each ``EoMTViT`` (position grid of another crop, 14x14
  kernels), see :func:`~mmeomt.models.backbones.convert.adapt_vit_state`.

The result is then checked against the model's own state dict.  mmengine loads non-strictly by
default and would only *warn* about missing, unexpected or mis-shaped keys, leaving random
weights behind; here any of them raises ``ValueError`` listing them.  The one deliberate
exception is ``skip_mismatched``: parameters under those prefixes (e.g. ``eomt.class_head`` to
fine-tune on another label set, the authors' ``load_ckpt_class_head=False``) keep their
initialisation when the checkpoint lacks them or holds another shape, with a warning.  Weights
that fit are still loaded, so resuming such a fine-tuning run restores them.

A foreign checkpoint may number its classes differently from the dataset the config uses: the
authors' ADE20K panoptic models use ADE20K's 150-class order, mmdet's ``ADE20KPanopticDataset``
puts the 100 thing classes first.  ``class_order`` gives, for each of the model's classes, its
row in the checkpoint's class head; the rows are permuted on load (for converted checkpoints
only: our own checkpoints are already in the model's order).

DINOv2 weights for the backbone alone are not whole-model checkpoints: they go through the
backbone's ``init_cfg`` (its own pre-hook converts them).
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.logging import print_log
from torch import Tensor, nn

from .backbones.convert import adapt_vit_state
from .backbones.vit import EoMTViT
from .convert import convert_eomt_checkpoint, detect_eomt_checkpoint_format
from .eomt import EoMT

#: how many keys of each kind an error message names before summarising
MAX_LISTED = 30


def _listing(title: str, items: Sequence[str]) -> str:
    shown = list(items[:MAX_LISTED])
    more = f'\n    ... and {len(items) - MAX_LISTED} more' if len(items) > MAX_LISTED else ''
    return f'  {title} ({len(items)}):\n    ' + '\n    '.join(shown) + more


def _core_name(model: nn.Module) -> str:
    names = [name for name, module in model.named_modules() if isinstance(module, EoMT)]
    if len(names) != 1:
        raise TypeError(f'{type(model).__name__}: expected one EoMT core, found {len(names)}')
    return names[0]


def _skipped(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + '.') for p in prefixes)


def reorder_class_head(state_dict: Dict[str, Tensor], head: str,
                       class_order: Sequence[int]) -> bool:
    """Permute the class-head rows ``head + '.weight'`` / ``'.bias'`` in place so that row ``i``
    is the checkpoint's row ``class_order[i]``; the last ("no object") row stays last.

    Returns:
        False (and changes nothing) when the checkpoint's head has another class count, e.g. a
        COCO head loaded for fine-tuning on ADE20K (``skip_mismatched`` handles that).

    Raises:
        ValueError: ``class_order`` is not a permutation of the checkpoint's classes.
    """
    weight = state_dict.get(head + '.weight')
    if weight is None or weight.shape[0] != len(class_order) + 1:
        return False
    if sorted(class_order) != list(range(len(class_order))):
        raise ValueError(f'checkpoint_class_order must be a permutation of 0..'
                         f'{len(class_order) - 1}, got {list(class_order)}')
    rows = list(class_order) + [len(class_order)]
    for name in (head + '.weight', head + '.bias'):
        if name in state_dict:
            state_dict[name] = state_dict[name][rows]
    return True


def fit_eomt_checkpoint(model: nn.Module, state_dict: Dict[str, Tensor], prefix: str,
                        skip_mismatched: Sequence[str] = (),
                        class_order: Optional[Sequence[int]] = None) -> None:
    """Convert the keys of ``state_dict`` under ``prefix`` to ``model``'s and check them, in place.

    Args:
        model: a module holding exactly one ``EoMT`` core (an adapter).
        state_dict: the whole state dict being loaded (modified in place).
        prefix: where ``model`` sits in the module being loaded (``''`` when it is the root).
        skip_mismatched: prefixes of ``model``'s state-dict keys, e.g. ``('eomt.class_head',)``,
            that may be absent from the checkpoint or have another shape there; such entries
            are dropped and the parameters keep their current values.
        class_order: for each of the model's classes, the checkpoint's class index; applied
            to converted (not mmeomt) checkpoints whose class head has as many classes.

    Raises:
        ValueError: an unrecognised checkpoint, or one that does not fit: the message lists
            the missing, unexpected and mis-shaped keys (relative to ``model``).
    """
    name = type(model).__name__
    core = _core_name(model) + '.'
    keys = [k for k in state_dict if k.startswith(prefix)]
    local = {k[len(prefix):]: state_dict[k] for k in keys}
    fmt = 'mmeomt'
    if not any(k.startswith(core) for k in local):
        try:
            fmt = detect_eomt_checkpoint_format(local)
            converted = convert_eomt_checkpoint(local, prefix=core)
        except ValueError as error:
            raise ValueError(f'{name}: cannot load this checkpoint: {error}. (DINOv2 weights '
                             'for the backbone alone go into the backbone\'s init_cfg.)') from None
        for key in keys:
            del state_dict[key]
        state_dict.update((prefix + k, v) for k, v in converted.items())
        if class_order is not None:
            reorder_class_head(state_dict, prefix + core + 'class_head', class_order)

    # Fit ViT weights (position grid, patch kernel) before comparing shapes; EoMTViT's own hook
    # then finds them fitting and leaves them alone.
    for vit_name, module in model.named_modules():
        if isinstance(module, EoMTViT):
            try:
                adapt_vit_state(module, state_dict, prefix + vit_name + '.')
            except ValueError as error:
                raise ValueError(f'{name}: cannot load this checkpoint ({fmt} format): '
                                 f'{error}') from None

    expected = {k: v.shape for k, v in model.state_dict().items()}
    loaded = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    mismatched: List[Tuple[str, tuple, tuple]] = [
        (k, tuple(loaded[k].shape), tuple(expected[k])) for k in expected
        if k in loaded and tuple(loaded[k].shape) != tuple(expected[k])]

    skipped_missing = [k for k in missing if _skipped(k, skip_mismatched)]
    skipped_shapes = [m for m in mismatched if _skipped(m[0], skip_mismatched)]
    missing = [k for k in missing if k not in skipped_missing]
    mismatched = [m for m in mismatched if m not in skipped_shapes]
    if missing or unexpected or mismatched:
        parts = [f'{name}: the checkpoint ({fmt} format) does not fit the model:']
        if missing:
            parts.append(_listing('missing keys', missing))
        if unexpected:
            parts.append(_listing('unexpected keys', unexpected))
        if mismatched:
            parts.append(_listing('shape mismatches (checkpoint vs model)', [
                f'{k}: {tuple(c)} vs {tuple(m)}' for k, c, m in mismatched]))
        parts.append(f'To start some parameters from their initialisation instead (e.g. another '
                     f'class count), set {name}(skip_mismatched=[...]) with their prefixes, '
                     f"e.g. ['{core}class_head'].")
        raise ValueError('\n'.join(parts))

    for key, _, _ in skipped_shapes:
        del state_dict[prefix + key]
    if skipped_missing or skipped_shapes:
        kept = skipped_missing + [k for k, _, _ in skipped_shapes]
        print_log(f'{name}: kept the initial values of {", ".join(kept)} (skip_mismatched: the '
                  'checkpoint lacks them or holds another shape)', logger='current',
                  level=logging.WARNING)


__all__ = ['fit_eomt_checkpoint', 'reorder_class_head']
