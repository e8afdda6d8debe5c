"""The table of checkpoint formats and the machinery every entry shares.

A :class:`CheckpointFormat` says, for one published layout of weights, how it is recognised
from its keys, how its keys are renamed to ours, what is finished after renaming (e.g. q/k/v
fused) and how the result is fitted to the model being loaded (e.g. the position grid resized).
:data:`FORMATS` holds the entries of each *kind* in the order they are tried:

* ``'backbone'``: weights of a ViT alone, converted to :class:`~mmeomt.models.EoMTViT` keys
  (:mod:`.dinov2`);
* ``'eomt'``: weights of a whole EoMT model, converted to the keys of an
  :class:`~mmeomt.models.EoMT` core (:mod:`.eomt`); their ViT part goes through the
  ``'backbone'`` table.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from torch import Tensor, nn

StateDict = Dict[str, Tensor]
#: ``(regex searched in a key without its prefix, replacement)``; the replacement is a
#: ``re.sub`` template or function, or None to drop the key (not part of the model).
Rule = Tuple[str, Union[str, Callable[[re.Match], str], None]]
#: What a state dict is fitted to: the module being loaded, a dict of geometry (see
#: :func:`.dinov2.fit_dinov2`) or None (keep the checkpoint's shapes).
Target = Union[nn.Module, Mapping, None]

KINDS = ('backbone', 'eomt')


@dataclass(frozen=True)
class CheckpointFormat:
    """One layout of weights: recognition, key rules, finishing steps and fitting.

    Attributes:
        name: e.g. ``'timm'``; unique within its kind.
        kind: ``'backbone'`` or ``'eomt'``.
        recognise: ``state_dict -> prefix or None``: the common prefix (``''`` or ending with
            ``'.'``) under which the state dict holds this layout, or None when it is not this
            layout.  May raise ``ValueError`` for a state dict that is this layout but unusable
            (e.g. several ViTs under different prefixes).
        rules: applied in order to each key without its prefix; the first rule whose regex
            matches renames (or drops) the key.  A key no rule matches is *unknown*: reported
            (strict) or kept under its own name (non-strict, so that ``load_state_dict``
            reports it as unexpected).
        finish: in-place steps on the renamed state dict (e.g. fuse q/k/v into qkv).
        fit: ``(state_dict, target) -> state_dict``, fitting the renamed weights to the
            model (resampling); None leaves them as they are.
        backbone: ``'eomt'`` formats only: regex on keys without prefix that selects the
            ViT's weights; they are converted by the ``'backbone'`` table and placed under
            ``backbone.``.  None when the ViT's keys are covered by ``rules``.
        description: one line for error messages and the docs.
    """
    name: str
    kind: str
    recognise: Callable[[Mapping[str, Tensor]], Optional[str]]
    rules: Sequence[Rule] = ()
    finish: Sequence[Callable[[StateDict], None]] = ()
    fit: Optional[Callable[[StateDict, Target], StateDict]] = None
    backbone: Optional[str] = None
    description: str = ''
    _compiled: List[Tuple[re.Pattern, object]] = field(default=None, init=False, repr=False,
                                                       compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f'CheckpointFormat {self.name!r}: kind must be one of {KINDS}, '
                             f'got {self.kind!r}')
        object.__setattr__(self, '_compiled',
                           [(re.compile(pattern), repl) for pattern, repl in self.rules])

    def rename(self, state_dict: Mapping[str, Tensor]) -> Tuple[StateDict, List[str]]:
        """Apply :attr:`rules` and :attr:`finish` to keys without prefix.

        Returns:
            ``(renamed, unknown)``: the renamed state dict and the keys no rule matched (they
            are not in ``renamed``).
        """
        out, unknown = {}, []
        for key, value in state_dict.items():
            for pattern, repl in self._compiled:
                if pattern.search(key):
                    if repl is not None:
                        out[pattern.sub(repl, key)] = value
                    break
            else:
                unknown.append(key)
        for step in self.finish:
            step(out)
        return out, unknown


#: The formats of each kind, in the order they are tried: put a more specific layout before a
#: more general one it would otherwise be taken for.
FORMATS: Dict[str, List[CheckpointFormat]] = {kind: [] for kind in KINDS}


def register_format(fmt: CheckpointFormat, before: Optional[str] = None) -> CheckpointFormat:
    """Add ``fmt`` to :data:`FORMATS` (at the end, or before the entry named ``before``).

    Raises:
        KeyError: a format of that kind and name exists, or ``before`` names none.
    """
    table = FORMATS[fmt.kind]
    names = [f.name for f in table]
    if fmt.name in names:
        raise KeyError(f'register_format: a {fmt.kind} format named {fmt.name!r} exists')
    if before is None:
        table.append(fmt)
    elif before in names:
        table.insert(names.index(before), fmt)
    else:
        raise KeyError(f'register_format: no {fmt.kind} format named {before!r} to insert '
                       f'before; there are {names}')
    return fmt


def get_format(kind: str, name: str) -> CheckpointFormat:
    """The entry ``name`` of ``kind``; KeyError listing the known names otherwise."""
    for fmt in FORMATS[kind]:
        if fmt.name == name:
            return fmt
    raise KeyError(f'no {kind} checkpoint format {name!r}; known: '
                   f'{[f.name for f in FORMATS[kind]]}')


def format_names(kind: str) -> Tuple[str, ...]:
    return tuple(f.name for f in FORMATS[kind])


def sample_keys(keys, n: int = 8) -> str:
    """``'a, b, ... (N in all)'``: a few keys for an error message."""
    keys = list(keys)
    more = f', ... ({len(keys)} in all)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def strip_compile_wrappers(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Drop ``torch.compile``'s ``_orig_mod`` from key names (the authors strip it on save)."""
    return {k.replace('._orig_mod', '').replace('_orig_mod.', ''): v
            for k, v in state_dict.items()}


def find_anchor(state_dict: Mapping[str, Tensor], anchor: str, what: str) -> Optional[str]:
    """The prefix under which ``state_dict`` has the key ``anchor``, or None.

    Raises:
        ValueError: ``anchor`` appears under several prefixes (several models in one file).
    """
    prefixes = sorted({key[:-len(anchor)] for key in state_dict if key.endswith(anchor)
                       and (key == anchor or key[-len(anchor) - 1] == '.')})
    if len(prefixes) > 1:
        raise ValueError(f'Ambiguous {what} checkpoint: it holds several ViTs, under the '
                         f'prefixes {prefixes}; select one (e.g. with init_cfg '
                         "'prefix') before loading")
    return prefixes[0] if prefixes else None


def detect_format(state_dict: Mapping[str, Tensor], kind: str) -> Tuple[CheckpointFormat, str]:
    """The first entry of ``FORMATS[kind]`` that recognises ``state_dict``, with its prefix.

    Raises:
        ValueError: no entry recognises it; the message lists the formats and sample keys.
    """
    for fmt in FORMATS[kind]:
        prefix = fmt.recognise(state_dict)
        if prefix is not None:
            return fmt, prefix
    what = 'DINOv2' if kind == 'backbone' else 'EoMT'
    expected = '; '.join(f'{f.name}: {f.description}' for f in FORMATS[kind])
    raise ValueError(f'Unrecognised {what} checkpoint: expected one of these layouts ({expected})'
                     f', possibly under a common prefix; got {len(state_dict)} keys such as '
                     f'{sample_keys(state_dict)}')


def convert(state_dict: Mapping[str, Tensor], kind: str, target: Target = None,
            strict: bool = True, fmt: Optional[CheckpointFormat] = None,
            prefix: Optional[str] = None) -> Tuple[StateDict, CheckpointFormat, List[str]]:
    """Convert ``state_dict`` of any format of ``kind`` to our keys (no prefix) and fit it.

    Keys outside the format's prefix (e.g. a classifier beside the ViT) are dropped.

    Args:
        state_dict: the checkpoint's state dict.
        kind: ``'backbone'`` or ``'eomt'``.
        target: what to fit to (see :data:`Target`).
        strict: raise on keys no rule knows; otherwise return them as ``unknown`` (with
            their prefix, as in ``state_dict``).
        fmt, prefix: the format and prefix when already detected.

    Returns:
        ``(converted, fmt, unknown)``.

    Raises:
        ValueError: unrecognised format, or (strict) keys the format has no place for.
    """
    state_dict = strip_compile_wrappers(state_dict)
    if fmt is None:
        fmt, prefix = detect_format(state_dict, kind)
    local = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    out: StateDict = {}
    unknown: List[str] = []
    if fmt.backbone is not None:
        select = re.compile(fmt.backbone)
        vit = {k: v for k, v in local.items() if select.search(k)}
        local = {k: v for k, v in local.items() if k not in vit}
        if vit:
            converted, _, vit_unknown = convert(vit, 'backbone', strict=strict)
            out.update(('backbone.' + k, v) for k, v in converted.items())
            unknown += vit_unknown
    renamed, rest = fmt.rename(local)
    out.update(renamed)
    unknown += rest
    unknown = [prefix + k for k in unknown]
    if unknown and strict:
        what = ('DINOv2', 'a DINOv2 ViT') if kind == 'backbone' else ('EoMT', 'EoMT')
        if fmt.name.startswith('dinov3'):
            what = ('DINOv3', 'a DINOv3 ViT')
        raise ValueError(f'{what[0]} checkpoint in {fmt.name} format has keys that are not '
                         f'part of {what[1]}: {sample_keys(unknown)}')
    if fmt.fit is not None:
        out = fmt.fit(out, target)
    return out, fmt, unknown


__all__ = ['CheckpointFormat', 'FORMATS', 'KINDS', 'Rule', 'StateDict', 'Target', 'convert',
           'detect_format', 'find_anchor', 'format_names', 'get_format', 'register_format',
           'sample_keys', 'strip_compile_wrappers']
