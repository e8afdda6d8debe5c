"""Layer-wise lr decay for EoMT (docs/method.md §3), and a fused AdamW.

Why subclass mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` rather than mmengine's
``DefaultOptimWrapperConstructor``: mmpretrain's already walks the model, asks a
``get_layer_depth(param_name)`` for each parameter, sets ``lr = base_lr * decay ** (num_layers -
depth - 1)`` and records ``lr_scale``, and it handles ``custom_keys`` / ``*_decay_mult`` the
mmengine way; the ViTs' ``get_layer_depth`` is written for exactly that protocol.  What EoMT
adds is (1) finding the ViT inside a detector/segmentor and giving every other parameter
(queries, heads, upscale) the base lr, (2) the ``'vit'`` tag the two-stage warm-up reads, and
(3) merging the per-parameter groups into one group per (lr, weight decay) class.  mmengine's
default constructor would need all of the depth logic re-written.

Weight decay: as the authors do, every parameter (norms, biases, tokens, queries included) gets
the optimizer's ``weight_decay``; ``paramwise_cfg`` options such as ``norm_decay_mult`` still
work if a config wants otherwise.

Fused AdamW: on the CPU, torch's default AdamW update is a Python loop over the parameter tensors,
and its ``foreach`` path is no faster there (the CPU has no multi-tensor kernels: as fast as the
loop on ViT-T, x1.5-1.9 slower on ViT-B/S on this project's 2-core machine); ``fused=True`` runs one
vectorised kernel per tensor, x2-3.6 faster than the loop on ViT-T/S/B.  Its rounding differs
from the loop's by a float32 ulp or two per step (the same update formula, evaluated in another
order).  On CUDA torch documents the fused implementation as its fastest.
"""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import torch
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIMIZERS
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor
from torch import nn

from mmeomt.registry import OPTIM_WRAPPER_CONSTRUCTORS

# Keys mmpretrain adds per parameter that do not survive merging.
_PER_PARAM_KEYS = ('params', 'param_name', 'layer_id')
_STEM = ('cls_token', 'register_tokens', 'pos_embed', 'patch_embed')
# Devices on which Adam/AdamW are fused by default: the CPU (measured here) and CUDA (torch's
# recommended implementation there); torch supports a few more.
FUSED_DEVICES = ('cpu', 'cuda')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class EoMTOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """AdamW groups with layer-wise lr decay over the ViT of an EoMT model.

    With ``n`` ViT blocks and ``decay = paramwise_cfg['layer_decay_rate']`` (default 0.8):

    * block ``i``: ``lr * decay ** (n - 1 - i)``;
    * stem (patch embedding, position embedding, [CLS], registers): ``lr * decay ** (n - 1)``;
    * the ViT's final norm and every non-ViT parameter: ``lr``;
    * with ``paramwise_cfg['decay_query_blocks'] = False`` (the authors' DINOv3 recipes,
      their ``llrd_l2_enabled: False``), the last ``num_blocks`` blocks of each EoMT core, those
      that see the queries, get ``lr`` too.

    Each param group carries ``'vit'`` (True for the parameters of the ViT, ``EoMTViT`` or
    ``DINOv3ViT``, final norm included, as the authors' scheduler treats the whole backbone: it
    stays at lr 0 during the first warm-up stage), ``'lr_scale'`` and a readable ``'name'`` such as
    ``'eomt.backbone[stem+layers.0]'``.  Parameters with equal (vit, lr, weight decay) share a
    group: the optimizer update is the same as with the authors' one group per parameter, with
    far fewer groups (``n + 1`` ViT groups + 1 instead of one per tensor).

    Non-ViT groups come first, so the ``lr`` that mmengine logs (that of group 0) is the base lr.

    Adam and AdamW get ``fused=True`` when every trainable parameter is on the CPU or a CUDA
    device, unless the optimizer config sets ``fused`` or ``foreach`` itself (``fused=False``
    restores torch's default).

    Example::

        optim_wrapper = dict(
            type='OptimWrapper',
            constructor='mmeomt.EoMTOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            paramwise_cfg=dict(layer_decay_rate=0.8),
            clip_grad=dict(max_norm=0.01, norm_type=2))
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        # A non-empty paramwise_cfg makes mmengine's __call__ go through add_params (an empty
        # one would hand model.parameters() to the optimizer: no decay, no 'vit' tags).
        paramwise_cfg = dict(paramwise_cfg or {})
        paramwise_cfg.setdefault('layer_decay_rate', 0.8)
        # Ours, not mmpretrain's: taken out before its constructor sees the dict.
        self.decay_query_blocks = paramwise_cfg.pop('decay_query_blocks', True)
        if not isinstance(self.decay_query_blocks, bool):
            raise ValueError('EoMTOptimWrapperConstructor: paramwise_cfg.decay_query_blocks '
                             f'must be True or False, got {self.decay_query_blocks!r}')
        rate = paramwise_cfg['layer_decay_rate']
        if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError('EoMTOptimWrapperConstructor: paramwise_cfg.layer_decay_rate must '
                             f'be in (0, 1], got {rate!r}')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_lr is None or self.base_wd is None:
            raise ValueError('EoMTOptimWrapperConstructor: optim_wrapper.optimizer needs `lr` and '
                             '`weight_decay` (EoMT: AdamW, lr=1e-4, weight_decay=0.05), got '
                             f'{dict(self.optimizer_cfg)}')

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """The optim wrapper of ``model`` (with ``fused=True`` for Adam/AdamW, see above)."""
        optimizer_cfg = self.optimizer_cfg
        if self._use_fused(model):
            self.optimizer_cfg = dict(optimizer_cfg, fused=True)
        try:
            return super().__call__(model)
        finally:
            self.optimizer_cfg = optimizer_cfg

    def _use_fused(self, model: nn.Module) -> bool:
        if 'fused' in self.optimizer_cfg or 'foreach' in self.optimizer_cfg:
            return False
        optimizer_cls = self.optimizer_cfg['type']
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_cls)
        if not (isinstance(optimizer_cls, type)
                and issubclass(optimizer_cls, (torch.optim.Adam, torch.optim.AdamW))):
            return False
        module = getattr(model, 'module', model)  # as mmengine's __call__: unwrap DDP
        return all(p.device.type in FUSED_DEVICES and p.is_floating_point()
                   for p in module.parameters() if p.requires_grad)

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   get_layer_depth: Optional[Callable] = None, **kwargs) -> None:
        """Fill ``params`` with the merged, tagged groups of ``module`` (the whole model)."""
        if prefix or get_layer_depth is not None:
            # mmpretrain's recursion over sub-modules: plain per-parameter groups.
            return super().add_params(params, module, prefix, get_layer_depth, **kwargs)

        from mmeomt.models import EoMT
        from mmeomt.models.backbones import VIT_BACKBONES
        vits = OrderedDict((f'{name}.' if name else '', m) for name, m in module.named_modules()
                           if isinstance(m, VIT_BACKBONES))
        if not vits:
            raise RuntimeError(f'EoMTOptimWrapperConstructor: {type(module).__name__} contains '
                               'no mmeomt ViT (EoMTViT, DINOv3ViT), so there is nothing to '
                               'apply layer decay to')
        # The first block that sees the queries, per ViT (for decay_query_blocks=False).
        query_start = {}
        for name, core in module.named_modules():
            if isinstance(core, EoMT):
                vit_prefix = f'{name}.backbone.' if name else 'backbone.'
                query_start[vit_prefix] = len(core.backbone.layers) - core.num_blocks

        def layer_depth(param_name: str) -> Tuple[int, int]:
            for vit_prefix, vit in vits.items():
                if param_name.startswith(vit_prefix):
                    depth, num_layers = vit.get_layer_depth(param_name, prefix=vit_prefix)
                    start = query_start.get(vit_prefix)
                    in_block = param_name[len(vit_prefix):].startswith('layers.')
                    if (not self.decay_query_blocks and start is not None and in_block
                            and depth - 1 >= start):  # block depth - 1 sees the queries
                        return num_layers - 1, num_layers  # the base lr
                    return depth, num_layers
            return 0, 1  # decay ** (1 - 0 - 1) = 1: the base lr

        per_param: List[dict] = []
        super().add_params(per_param, module, prefix='', get_layer_depth=layer_depth, **kwargs)
        groups = self._merge(per_param, list(vits))
        params.extend(groups)
        self._log(groups)

    @staticmethod
    def _unit(param_name: str, vit_prefix: Optional[str]) -> str:
        """The module a parameter is listed under in a group name."""
        if vit_prefix is None:
            module_path = param_name.split('.')[:-1]  # e.g. eomt.mask_head.0
            return '.'.join(module_path[:2]) or param_name
        name = param_name[len(vit_prefix):]
        if name.startswith(_STEM):
            return 'stem'
        parts = name.split('.')
        return '.'.join(parts[:2]) if parts[0] == 'layers' else parts[0]

    def _merge(self, per_param: List[dict], vit_prefixes: List[str]) -> List[dict]:
        merged: Dict[tuple, dict] = OrderedDict()
        for group in per_param:
            name = group['param_name']
            vit_prefix = next((p for p in vit_prefixes if name.startswith(p)), None)
            hyper = {k: v for k, v in group.items() if k not in _PER_PARAM_KEYS}
            # repr: custom hyper-parameters may be unhashable (e.g. a list of betas).
            key = (vit_prefix or '', group['layer_id'], repr(sorted(hyper.items())))
            if key not in merged:
                merged[key] = dict(hyper, params=[], vit=vit_prefix is not None, units=[],
                                   layer_id=group['layer_id'])
            target = merged[key]
            target['params'].extend(group['params'])
            unit = self._unit(name, vit_prefix)
            if unit not in target['units']:
                target['units'].append(unit)

        groups = []
        for (vit_prefix, _, _), group in merged.items():
            units = '+'.join(group.pop('units'))
            group['name'] = f'{vit_prefix[:-1]}[{units}]' if vit_prefix else units
            groups.append(group)
        # Non-ViT first (group 0's lr is the one mmengine logs), then the ViT from the top block
        # down to the stem.
        groups.sort(key=lambda g: (g['vit'], -g['layer_id']))
        return groups

    @staticmethod
    def _log(groups: List[dict]) -> None:
        lines = ['EoMT param groups (name: vit, lr, lr_scale, weight_decay, #tensors):']
        for g in groups:
            lines.append(f"  {g['name']}: vit={g['vit']}, lr={g['lr']:.3g}, "
                         f"lr_scale={g['lr_scale']:.3g}, weight_decay={g.get('weight_decay')}, "
                         f"{len(g['params'])}")
        MMLogger.get_current_instance().info('\n'.join(lines))
