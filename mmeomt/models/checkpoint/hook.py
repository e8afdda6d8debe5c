"""The one load-time pre-hook: convert a checkpoint of any format and fit it to the model.

:func:`attach_checkpoint_hook` registers :func:`fit_on_load`, one function, as the
``load_state_dict`` pre-hook of every EoMT module.  In a load it works once, at the outermost
EoMT module being loaded: ``EoMTDetector`` / ``EoMTSegmentor`` (whole-model formats, then every
``EoMTViT`` inside fitted), a bare ``EoMT`` core (the same), or an ``EoMTViT`` loaded on its own,
e.g. from its ``init_cfg`` (DINOv2 formats); the modules inside it are then left alone.  torch's ``load_state_dict`` and mmengine's
(``load_checkpoint``) both run it, through ``_load_from_state_dict``.

What the hook does with the state dict being loaded (in place, keys under its module's prefix):

1. recognise the format (:mod:`.formats`) and rename the keys to ours;
2. fit: the ViT's patch kernel and position grid resampled to the model's, the class head's rows
   permuted (``checkpoint_class_order``), and parameters under ``skip_mismatched`` that the
   checkpoint lacks or holds in another shape given the model's current values (logged).

It raises nothing about keys that do not fit: torch hands every pre-hook ``strict=True``
whatever the caller asked for, so the hook cannot tell, and leaves the decision to
``load_state_dict``.  Keys no format knows stay under their own names, so
``load_state_dict(strict=False)`` reports them in ``unexpected_keys`` (and what they did not
provide in ``missing_keys``) as torch documents, and ``strict=True`` raises torch's error.  What
the hook found (format, unrecognised keys, shape mismatches) is kept on the module, and our
loading paths (:func:`~.loading.load_checkpoint_to_model`, strict by default) turn it into a
``ValueError`` that names every missing, unexpected and mis-shaped key (:func:`check_fit`).
Input that is wrong whatever the strictness (q/k/v incomplete, several ViTs in one file, a
``checkpoint_class_order`` that is no permutation) raises ``ValueError`` in the hook.
"""
import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.logging import print_log
from torch import Tensor, nn

from .formats import convert, detect_format, sample_keys, strip_compile_wrappers

#: how many keys of each kind an error message names before summarising
MAX_LISTED = 30
#: ``module.<ROLE>``: ``'backbone'`` (an EoMTViT) or ``'eomt'`` (an EoMT core); adapters that
#: hold a core have ``'model'``.
ROLE = '_checkpoint_role'
_COVERED = '_checkpoint_covered_by'  # the missing_keys list of the load that fitted it
_REPORT = '_checkpoint_fit'


@dataclass
class FitReport:
    """What the hook found in the last state dict loaded into a module.

    Attributes:
        model: the module's class name.
        prefix: where the module sat in the module being loaded.
        format: the format recognised, or None.
        problem: why no format was recognised (with sample keys), or None.
        mismatched: ``(key, checkpoint shape, model shape)`` after fitting, keys with prefix.
        missing, unexpected: keys (with prefix) the fitted state dict lacks / has beyond the
            module's; torch reports them itself, except when a shape mismatch makes it raise.
        hint: how to fix a mismatch (``skip_mismatched``), for the error message.
    """
    model: str
    prefix: str
    format: Optional[str] = None
    problem: Optional[str] = None
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    hint: str = ''


def attach_checkpoint_hook(module: nn.Module, role: str) -> None:
    """Register :func:`fit_on_load` on ``module`` (see the module docstring).

    Call it at the end of ``__init__``, after the submodules are built.

    Args:
        module: an ``EoMTViT`` (``role='backbone'``), ``EoMT`` (``'eomt'``) or an adapter
            holding one ``EoMT`` (``'model'``).
    """
    if role not in ('backbone', 'eomt', 'model'):
        raise ValueError(f"attach_checkpoint_hook: role must be 'backbone', 'eomt' or 'model', "
                         f'got {role!r}')
    setattr(module, ROLE, role)
    module.register_load_state_dict_pre_hook(fit_on_load)


def fit_on_load(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict,
                strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                error_msgs: List[str]) -> None:
    """The ``load_state_dict`` pre-hook (torch's signature with the module first; ``strict``
    is always True there, whatever the caller asked for).

    The outermost EoMT module of the load fits the keys of every EoMT module inside it, and
    marks them with this load's ``missing_keys`` list (one list object per load, in torch and
    in mmengine), so that their own hooks, which run next in the same load, do nothing.
    """
    if module.__dict__.get(_COVERED) is missing_keys:
        return
    if getattr(module, ROLE) == 'backbone':
        report = fit_backbone_state(module, state_dict, prefix)
    else:
        report = fit_model_state(module, state_dict, prefix,
                                 skip_mismatched=getattr(module, 'skip_mismatched', ()),
                                 class_order=getattr(module, 'checkpoint_class_order', None))
    module.__dict__[_REPORT] = report
    for inner in module.modules():
        if inner is not module and hasattr(inner, ROLE):
            inner.__dict__[_COVERED] = missing_keys


def _fits(vit: nn.Module, sd: Dict[str, Tensor]) -> bool:
    """Whether our-format weights already have the shapes of the backbone's own (kernel,
    position grid...): then there is nothing to fit.  Keys the backbone lacks (a DINOv2
    ``pos_embed`` given to a RoPE ViT) need no fitting: ``load_state_dict`` reports them."""
    own = vit.state_dict(keep_vars=True)
    return all(v.shape == own[k].shape for k, v in sd.items() if k in own)


def _mismatches(module: nn.Module, state_dict: dict, prefix: str) -> List[Tuple[str, tuple,
                                                                               tuple]]:
    return [(prefix + k, tuple(state_dict[prefix + k].shape), tuple(v.shape))
            for k, v in module.state_dict().items()
            if prefix + k in state_dict and state_dict[prefix + k].shape != v.shape]


def fit_backbone_state(vit: nn.Module, state_dict: dict, prefix: str) -> FitReport:
    """Convert and fit the keys of ``state_dict`` under ``prefix`` to ``vit``, in place.

    * Our own keys are left as they are, except that a ``pos_embed`` of another grid (e.g. a
      640-crop checkpoint loaded at 1280) or a kernel of another size is resampled.
    * Other layouts (:mod:`.dinov2`) are converted and fitted; keys outside the layout's
      prefix (a classifier beside the ViT) are dropped.
    * Keys no rule of the layout knows, and state dicts of no known layout, are left as they
      are (``load_state_dict`` reports them); the report says why.
    """
    name = type(vit).__name__
    report = FitReport(name, prefix)
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not keys:
        return report
    local = strip_compile_wrappers({k[len(prefix):]: state_dict[k] for k in keys})
    try:
        fmt, inner = detect_format(local, 'backbone')
    except ValueError as error:
        if 'Ambiguous' in str(error):
            raise ValueError(f'{name} (prefix {prefix!r}): {error}') from None
        ours = set(vit.state_dict(keep_vars=True))
        unknown = [k for k in local if k not in ours]
        if unknown:  # else a partial state dict in our names
            report.problem = (f'{name}: cannot load keys {sample_keys(unknown)} (under prefix '
                              f'{prefix!r}): {error}')
        return report
    report.format = fmt.name
    if not (fmt.name == 'mmeomt' and not inner and _fits(vit, local)):
        try:
            converted, _, unknown = convert(local, 'backbone', target=vit, strict=False,
                                            fmt=fmt, prefix=inner)
        except ValueError as error:
            raise ValueError(f'{name} (prefix {prefix!r}): {error}') from None
        for key in keys:
            del state_dict[key]
        state_dict.update((prefix + k, v) for k, v in converted.items())
        state_dict.update((prefix + k, local[k]) for k in unknown)
        if unknown:
            vit_kind = 'DINOv3' if fmt.name.startswith('dinov3') else 'DINOv2'
            report.problem = (f'{vit_kind} checkpoint in {fmt.name} format has keys that are '
                              f'not part of a {vit_kind} ViT: {sample_keys(unknown)}')
    report.mismatched = _mismatches(vit, state_dict, prefix)
    return report


def _core_prefix(model: nn.Module) -> str:
    """``''`` when ``model`` is the EoMT core, else the core's name and a dot."""
    names = [name for name, module in model.named_modules()
             if getattr(module, ROLE, None) == 'eomt']
    if len(names) != 1:
        raise TypeError(f'{type(model).__name__}: expected one EoMT core, found {len(names)}')
    return names[0] + '.' if names[0] else ''


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


def fit_model_state(model: nn.Module, state_dict: Dict[str, Tensor], prefix: str,
                    skip_mismatched: Sequence[str] = (),
                    class_order: Optional[Sequence[int]] = None) -> FitReport:
    """Convert the keys of ``state_dict`` under ``prefix`` to ``model``'s and fit them, in place.

    Args:
        model: an ``EoMT`` core or a module holding exactly one (an adapter).
        state_dict: the whole state dict being loaded (modified in place).
        prefix: where ``model`` sits in the module being loaded (``''`` when it is the root).
        skip_mismatched: prefixes of ``model``'s state-dict keys, e.g. ``('eomt.class_head',)``,
            that may be absent from the checkpoint or have another shape there; they keep their
            current values (the state dict gets those), with a warning.
        class_order: for each of the model's classes, the checkpoint's class index; applied
            to converted checkpoints whose class head has as many classes.
    """
    name = type(model).__name__
    core = _core_prefix(model)
    report = FitReport(name, prefix, format='mmeomt', hint=(
        f'To start some parameters from their initialisation instead (e.g. another class '
        f"count), set {name}(skip_mismatched=[...]) with their prefixes, e.g. "
        f"['{core}class_head']."))
    keys = [k for k in state_dict if k.startswith(prefix)]
    local = strip_compile_wrappers({k[len(prefix):]: state_dict[k] for k in keys})
    if not (core and any(k.startswith(core) for k in local)):
        try:
            fmt, src = detect_format(local, 'eomt')
        except ValueError as error:
            report.format = None
            report.problem = (f'{name}: cannot load this checkpoint: {error}. (DINOv2 weights '
                              "for the backbone alone go into the backbone's init_cfg.)")
            return report
        report.format = fmt.name
        if not (fmt.name == 'mmeomt' and src == core):
            try:
                # target: the model, for formats whose fit needs it (the authors' DINOv3
                # deltas read the DINOv3 weights its backbone's init_cfg names).
                converted, _, unknown = convert(local, 'eomt', target=model, strict=False,
                                                fmt=fmt, prefix=src)
            except ValueError as error:
                raise ValueError(f'{name}: cannot load this checkpoint: {error}') from None
            for key in keys:
                del state_dict[key]
            state_dict.update((prefix + core + k, v) for k, v in converted.items())
            state_dict.update((prefix + k, local[k]) for k in unknown)
            if unknown:
                report.problem = (f'{name}: the checkpoint ({fmt.name} format) has keys EoMT '
                                  f'has no place for: {sample_keys(unknown)}')
            if class_order is not None:
                reorder_class_head(state_dict, prefix + core + 'class_head', class_order)

    # Fit ViT weights (position grid, patch kernel) before comparing shapes.
    for vit_name, module in model.named_modules():
        if getattr(module, ROLE, None) == 'backbone':
            try:
                vit_report = fit_backbone_state(module, state_dict, prefix + vit_name + '.')
            except ValueError as error:
                raise ValueError(f'{name}: cannot load this checkpoint ({report.format} '
                                 f'format): {error}') from None
            report.problem = report.problem or vit_report.problem

    kept = []
    for key, value in model.state_dict().items():
        loaded = state_dict.get(prefix + key)
        if _skipped(key, skip_mismatched) and (loaded is None or loaded.shape != value.shape):
            state_dict[prefix + key] = value
            kept.append(key)
    if kept:
        print_log(f'{name}: kept the initial values of {", ".join(kept)} (skip_mismatched: the '
                  'checkpoint lacks them or holds another shape)', logger='current',
                  level=logging.WARNING)
    report.mismatched = _mismatches(model, state_dict, prefix)
    own = model.state_dict(keep_vars=True)
    report.missing = [prefix + k for k in own if prefix + k not in state_dict]
    report.unexpected = [k for k in state_dict
                         if k.startswith(prefix) and k[len(prefix):] not in own]
    return report


def _listing(title: str, items: Sequence[str]) -> str:
    shown = list(items[:MAX_LISTED])
    more = f'\n    ... and {len(items) - MAX_LISTED} more' if len(items) > MAX_LISTED else ''
    return f'  {title} ({len(items)}):\n    ' + '\n    '.join(shown) + more


def reset_fit_reports(model: nn.Module) -> None:
    """Forget what the hook found in earlier loads (call before a load whose report you read)."""
    for module in model.modules():
        module.__dict__.pop(_REPORT, None)


def check_fit(model: nn.Module, missing_keys: Sequence[str], unexpected_keys: Sequence[str],
              size_error: Optional[BaseException] = None) -> None:
    """Raise ``ValueError`` if the last load into ``model`` did not fit exactly.

    Args:
        model: the module that was loaded.
        missing_keys, unexpected_keys: what ``load_state_dict(strict=False)`` returned.
        size_error: the ``RuntimeError`` torch raised for mis-shaped weights, if any.

    Raises:
        ValueError: naming the unrecognised format, or listing every missing, unexpected and
            mis-shaped key, with the format and how to keep initial values instead.
    """
    reports = [m.__dict__[_REPORT] for m in model.modules() if _REPORT in m.__dict__]
    mismatched = [m for r in reports for m in r.mismatched]
    if not (missing_keys or unexpected_keys or mismatched or size_error):
        return
    for report in reports:
        if report.problem and report.format is None:
            raise ValueError(report.problem) from None
    name = reports[0].model if reports else type(model).__name__
    fmt = next((r.format for r in reports if r.format), None)
    parts = [f'{name}: the checkpoint{f" ({fmt} format)" if fmt else ""} does not fit the '
             'model:']
    parts += [f'  {r.problem}' for r in reports if r.problem]
    if size_error is not None and not (missing_keys or unexpected_keys):
        # torch raised before it could list them: the outermost report has them.
        missing_keys = [k for r in reports[:1] for k in r.missing]
        unexpected_keys = [k for r in reports[:1] for k in r.unexpected]
    if missing_keys:
        parts.append(_listing('missing keys', list(missing_keys)))
    if unexpected_keys:
        parts.append(_listing('unexpected keys', list(unexpected_keys)))
    if mismatched:
        parts.append(_listing('shape mismatches (checkpoint vs model)', [
            f'{k}: {c} vs {m}' for k, c, m in mismatched]))
    elif size_error is not None:
        parts.append(f'  {size_error}')
    parts += [r.hint for r in reports if r.hint]
    raise ValueError('\n'.join(parts)) from None


def init_weights_then_load(module: nn.Module, base_init: Callable[[bool], None]) -> None:
    """``init_weights`` of an EoMT module whose ``Pretrained`` init_cfg loads our way.

    mmengine's ``PretrainedInit`` would read the file with mmengine's checkpoint loaders and
    load it non-strictly; here ``base_init(has_pretrained)`` runs mmengine's initialisation
    with the other init_cfg entries (and the submodules'), then every ``Pretrained`` entry is
    loaded by :func:`~.loading.load_pretrained` (our loading policy, strict by default).
    """
    from mmengine.model.weight_init import PretrainedInit

    from .loading import load_pretrained
    init_cfg = module.init_cfg
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg or [])
    pretrained = [c for c in cfgs if c.get('type') in ('Pretrained', PretrainedInit)]
    if not pretrained or getattr(module, '_is_init', False):
        base_init(bool(pretrained))  # mmengine warns about a second initialisation
        return
    module.init_cfg = [c for c in cfgs if all(c is not p for p in pretrained)] or None
    try:
        base_init(True)
    finally:
        module.init_cfg = init_cfg
    for cfg in pretrained:
        load_pretrained(module, cfg)


__all__ = ['FitReport', 'attach_checkpoint_hook', 'check_fit', 'fit_backbone_state',
           'fit_model_state', 'fit_on_load', 'init_weights_then_load', 'reorder_class_head',
           'reset_fit_reports']
