"""Whole-model EoMT checkpoints: the ``'eomt'`` entries of the format table.

Converted to the keys of an :class:`~mmeomt.models.EoMT` core (``backbone.*``,
``queries.weight``, ``class_head.*``, ``mask_head.{0,2,4}.*``,
``upscale.{i}.{conv1,conv2,norm}.*``, ``attn_mask_probs``):

* ``'authors'``: the released ``pytorch_model.bin`` files of tue-mps/eomt (Lightning module
  state): ``network.encoder.backbone.*`` (a timm ViT), ``network.q.weight``,
  ``network.class_head.*``, ``network.mask_head.{0,2,4}.*``,
  ``network.upscale.{i}.{conv1,conv2,norm}.*``, ``network.attn_mask_probs``; the pixel
  mean/std buffers (our data preprocessor normalises) and ``criterion.empty_weight`` are dropped.
* ``'transformers'``: ``EomtForUniversalSegmentation``: ``embeddings.*``, ``layers.N.*``,
  ``layernorm.*``, ``query.weight``, ``class_predictor.*``, ``mask_head.fc{1,2,3}.*``,
  ``upscale_block.block.{i}.{conv1,conv2,layernorm2d}.*``, ``attn_mask_probs``,
  ``criterion.empty_weight`` (dropped).
* ``'mmeomt'``: ours, under any prefix (``eomt.`` in ``EoMTDetector`` / ``EoMTSegmentor``
  checkpoints, none for a bare core).

The ViT part goes through the ``'backbone'`` table (:mod:`.dinov2`); its kernel and position
grid are kept here and fitted to the model on load.
"""
from typing import Mapping, Optional

from torch import Tensor

from .formats import (CheckpointFormat, StateDict, convert, detect_format, register_format,
                      strip_compile_wrappers)


def _recognise_mmeomt(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The prefix of an mmeomt EoMT core (``''``, ``'eomt.'``...): ``queries.weight`` with
    ``backbone.*`` beside it."""
    for key in state_dict:
        if key.endswith('queries.weight'):
            prefix = key[:-len('queries.weight')]
            if (prefix == '' or prefix.endswith('.')) and any(
                    k.startswith(prefix + 'backbone.') for k in state_dict):
                return prefix
    return None


def _recognise_authors(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    if 'network.q.weight' in state_dict or any(
            k.startswith('network.encoder.backbone.') for k in state_dict):
        return ''
    return None


def _recognise_transformers(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    return '' if 'query.weight' in state_dict and 'class_predictor.weight' in state_dict \
        else None


def _fc_to_sequential(match) -> str:
    """transformers' ``mask_head.fc{1,2,3}`` -> our ``mask_head.{0,2,4}`` (GELUs between)."""
    return f'mask_head.{2 * (int(match.group(1)) - 1)}.{match.group(2)}'


register_format(CheckpointFormat(
    name='authors', kind='eomt', recognise=_recognise_authors,
    backbone=r'^network\.encoder\.backbone\.',
    rules=[
        (r'^network\.q\.weight$', 'queries.weight'),
        (r'^network\.(class_head|mask_head\.[024])\.(weight|bias)$', r'\1.\2'),
        (r'^network\.upscale\.(\d+)\.(conv1|conv2|norm)\.(weight|bias)$', r'upscale.\1.\2.\3'),
        (r'^network\.attn_mask_probs$', 'attn_mask_probs'),
        (r'^network\.encoder\.pixel_(mean|std)$', None),  # the data preprocessor normalises
        (r'^criterion\.', None),  # the loss's no-object weight
    ],
    description="the authors' network.q.weight, network.encoder.backbone.*"))
register_format(CheckpointFormat(
    name='transformers', kind='eomt', recognise=_recognise_transformers,
    backbone=r'^(embeddings|layers|layernorm)\.',
    rules=[
        (r'^query\.weight$', 'queries.weight'),
        (r'^class_predictor\.(weight|bias)$', r'class_head.\1'),
        (r'^mask_head\.fc([123])\.(weight|bias)$', _fc_to_sequential),
        (r'^upscale_block\.block\.(\d+)\.(conv1|conv2)\.(weight|bias)$', r'upscale.\1.\2.\3'),
        (r'^upscale_block\.block\.(\d+)\.layernorm2d\.(weight|bias)$', r'upscale.\1.norm.\2'),
        (r'^attn_mask_probs$', 'attn_mask_probs'),
        (r'^criterion\.', None),
    ],
    description='transformers EomtForUniversalSegmentation query.weight, class_predictor.*, '
    'embeddings.*, layers.N.*'))
register_format(CheckpointFormat(
    name='mmeomt', kind='eomt', recognise=_recognise_mmeomt, rules=[(r'^(.*)$', r'\1')],
    description='[eomt.]queries.weight, [eomt.]backbone.*'))

EOMT_FORMATS = ('mmeomt', 'authors', 'transformers')


def detect_eomt_checkpoint_format(state_dict: Mapping[str, Tensor]) -> str:
    """The name of the layout of a whole-model EoMT state dict (see the module docstring).

    Raises:
        ValueError: none of them, with sample keys.
    """
    return detect_format(strip_compile_wrappers(state_dict), 'eomt')[0].name


def convert_eomt_checkpoint(state_dict: Mapping[str, Tensor], prefix: str = '') -> StateDict:
    """Convert an EoMT state dict to the keys of an ``EoMT`` core mounted at ``prefix``.

    Args:
        state_dict: in any format of :data:`EOMT_FORMATS` (a bare state dict; unwrap
            ``checkpoint['state_dict']`` first).
        prefix: where the core sits in the model being loaded: ``''`` for ``EoMT`` itself,
            ``'eomt.'`` for ``EoMTDetector`` / ``EoMTSegmentor``.

    Returns:
        a new state dict: ``{prefix}backbone.*``, ``{prefix}queries.weight``, ...; the ViT's
        kernel and position grid are the checkpoint's.

    Raises:
        ValueError: unknown format, or keys of a known format that EoMT has no place for.
    """
    if prefix and not prefix.endswith('.'):
        raise ValueError(f"convert_eomt_checkpoint: prefix must be '' or end with '.', "
                         f'got {prefix!r}')
    converted = convert(state_dict, 'eomt')[0]
    return {prefix + k: v for k, v in converted.items()}


__all__ = ['EOMT_FORMATS', 'convert_eomt_checkpoint', 'detect_eomt_checkpoint_format']
