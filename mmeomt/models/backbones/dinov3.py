"""The EoMT encoder on DINOv3: a ViT/16 with registers, LayerScale and rotary positions.

DINOv3 (Simeoni et al., 2025, arXiv 2508.10104) differs from DINOv2 (:class:`EoMTViT`) in:

* **positions**: no learned position embedding; every block rotates the queries and keys of the
  *patch* tokens (2-D axial RoPE).  Patch ``(r, c)`` of an ``h x w`` grid sits at
  ``y = 2 (r + 1/2) / h - 1``, ``x = 2 (c + 1/2) / w - 1``: coordinates are normalised per
  axis to [-1, 1], so the grid follows the input size with nothing to resample (a 1280 input
  sees the same coordinate range as a 640 one, twice as densely).  With head size ``d`` and
  ``f_k = theta ** (-4k / d)`` for ``k < d/4`` (theta = 100), the angles of a patch are
  ``2 pi [y f_0 .. y f_{d/4-1}, x f_0 .. x f_{d/4-1}]`` repeated twice (``d`` in all), applied
  as ``q cos + rotate_half(q) sin``.  Prefix tokens ([CLS], registers, and EoMT's queries in
  front of them) are not rotated.
* **coordinate augmentation in training** (as DINOv3 pre-training and the authors' EoMT
  fine-tuning, whose transformers backbone stays in training mode): per forward, the coordinates
  may be shifted, jittered per axis and rescaled by a log-uniform factor in
  ``[1/rescale, rescale]``; DINOv3's released models use rescale 2 only.  Off in ``eval()``.
* **attention biases**: query and value biases, no key bias (the original release stores a
  ``qkv.bias`` whose key part is masked to 0).
* **norm eps** 1e-5, patch 16 natively (no kernel resampling), LayerScale in every block.

S, B and L use a GELU MLP of width 4D; S+ and H+ a SwiGLU (``ffn_type='swiglu'``, give
``feedforward_channels``), which the authors' EoMT models do not use.

Parameter names follow :class:`EoMTViT` where the pieces are the same (``patch_embed.projection``,
``cls_token``, ``register_tokens``, ``layers.N.ln1/ln2``, ``layers.N.attn.qkv/proj/gamma1``,
``layers.N.ffn``, final ``ln1``); the attention adds ``q_bias`` and ``v_bias``.  DINOv3 weights of
transformers, timm and the original release are recognised and converted on load by
:mod:`mmeomt.models.checkpoint.dinov3` (the package's one pre-hook).
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.drop import build_dropout
from mmcv.cnn.bricks.transformer import FFN, PatchEmbed
from mmengine.model import BaseModule, ModuleList
from mmpretrain.models.utils import LayerScale, SwiGLUFFN, build_norm_layer
from torch import Tensor, nn

from mmeomt.registry import MODELS
from ..checkpoint.hook import attach_checkpoint_hook, init_weights_then_load
from .vit import vit_layer_depth

#: ``(cos, sin)``, each ``(h * w, head_dims)``: the rotation of every patch token.
Rope = Tuple[Tensor, Tensor]


def patch_coords(grid: Tuple[int, int], device=None) -> Tensor:
    """Patch centres of an ``(h, w)`` grid, normalised per axis to [-1, 1].

    Returns:
        ``(h * w, 2)`` float32 ``(y, x)``, row-major over the grid.
    """
    h, w = grid
    ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
    coords = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1).flatten(0, 1)
    return 2 * coords - 1


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dim (the RoPE pairing DINOv3 uses)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate the last ``h * w`` tokens of ``x`` ``(B, heads, N, d)``; the prefix stays."""
    cos, sin = rope
    num_patches = cos.shape[0]
    prefix, patches = x[..., :-num_patches, :], x[..., -num_patches:, :]
    patches = patches * cos + rotate_half(patches) * sin
    return torch.cat([prefix, patches], dim=-2)


class DINOv3RoPE(nn.Module):
    """DINOv3's 2-D rotary position embedding (see the module docstring).

    Args:
        head_dims: ``d``, a multiple of 4.
        theta: the base period (DINOv3: 100).
        shift: training only, add a uniform ``[-shift, shift]`` per axis to the coordinates.
        jitter: training only, scale each axis by a log-uniform factor in
            ``[1/jitter, jitter]``.
        rescale: training only, scale both axes by one log-uniform factor in
            ``[1/rescale, rescale]`` (DINOv3 and the authors' EoMT: 2).
    """

    def __init__(self, head_dims: int, theta: float = 100., shift: Optional[float] = None,
                 jitter: Optional[float] = None, rescale: Optional[float] = 2.):
        super().__init__()
        if head_dims % 4:
            raise ValueError(f'DINOv3RoPE: head_dims must be a multiple of 4 (two axes, sine '
                             f'and cosine pairs), got {head_dims}')
        self.head_dims = head_dims
        self.theta = theta
        self.shift, self.jitter, self.rescale = shift, jitter, rescale
        # Not saved: a function of head_dims and theta (checkpoints of every format omit it).
        inv_freq = theta**-torch.arange(0, 1, 4 / head_dims, dtype=torch.float32)
        self.register_buffer('inv_freq', inv_freq, persistent=False)

    def _augment(self, coords: Tensor) -> Tensor:
        def log_uniform(limit, n):
            r = math.log(limit)
            return torch.empty(n, device=coords.device).uniform_(-r, r).exp()

        if self.shift is not None:
            coords = coords + torch.empty(2, device=coords.device).uniform_(
                -self.shift, self.shift)
        if self.jitter is not None:
            coords = coords * log_uniform(self.jitter, 2)
        if self.rescale is not None:
            coords = coords * log_uniform(self.rescale, 1)
        return coords

    def forward(self, grid: Tuple[int, int], dtype: torch.dtype = torch.float32) -> Rope:
        """``(cos, sin)``, each ``(h * w, head_dims)`` in ``dtype`` (computed in float32)."""
        coords = patch_coords(grid, self.inv_freq.device)
        if self.training:
            coords = self._augment(coords)
        angles = 2 * math.pi * coords[:, :, None] * self.inv_freq  # (hw, 2, d/4)
        angles = angles.flatten(1).tile(2)  # (hw, d): [y freqs, x freqs] twice
        return angles.cos().to(dtype), angles.sin().to(dtype)


class DINOv3Attention(BaseModule):
    """Self-attention with RoPE on patch tokens, query/value biases and LayerScale.

    Args:
        embed_dims: ``D``.
        num_heads: heads; ``D / num_heads`` must be a multiple of 4 (RoPE).
        qkv_bias: query and value biases (DINOv3 has no key bias).
        proj_bias: bias of the output projection.
        layer_scale_init_value: LayerScale init (``gamma1``); 0 disables it.
        attn_drop: attention dropout.
        drop_path_rate: stochastic depth of the branch.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True,
                 proj_bias: bool = True, layer_scale_init_value: float = 1e-5,
                 attn_drop: float = 0., drop_path_rate: float = 0.):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'DINOv3Attention: embed_dims {embed_dims} is not a multiple of '
                             f'num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(embed_dims))
            self.v_bias = nn.Parameter(torch.zeros(embed_dims))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(embed_dims, embed_dims, bias=proj_bias)
        self.gamma1 = (LayerScale(embed_dims, layer_scale_init_value)
                       if layer_scale_init_value > 0 else nn.Identity())
        self.drop_path = build_dropout(dict(type='DropPath', drop_prob=drop_path_rate))

    def forward(self, x: Tensor, rope: Rope, attn_mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: layer-normed tokens ``(B, N, D)``, the last ``h * w`` of them patches.
            rope: ``(cos, sin)`` of :class:`DINOv3RoPE` for those patches.
            attn_mask: boolean ``(B, N, N)``, True where a row token may attend a column token.

        Returns:
            ``(B, N, D)`` after the projection, LayerScale and drop path.
        """
        B, N, D = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if attn_mask is not None:
            attn_mask = attn_mask[:, None]  # broadcast over heads
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.)
        x = self.proj(x.transpose(1, 2).reshape(B, N, D))
        return self.drop_path(self.gamma1(x))


class DINOv3Block(BaseModule):
    """Pre-norm block: ``x + attn(ln1(x))`` then ``x + ffn(ln2(x))`` (LayerScale inside each)."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int,
                 ffn_type: str = 'mlp', qkv_bias: bool = True, proj_bias: bool = True,
                 layer_scale_init_value: float = 1e-5, drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-5)):
        super().__init__()
        self.ln1 = build_norm_layer(norm_cfg, embed_dims)
        self.attn = DINOv3Attention(embed_dims, num_heads, qkv_bias, proj_bias,
                                    layer_scale_init_value, drop_path_rate=drop_path_rate)
        self.ln2 = build_norm_layer(norm_cfg, embed_dims)
        drop_path = dict(type='DropPath', drop_prob=drop_path_rate)
        if ffn_type == 'mlp':
            self.ffn = FFN(embed_dims=embed_dims, feedforward_channels=feedforward_channels,
                           act_cfg=dict(type='GELU'), dropout_layer=drop_path,
                           layer_scale_init_value=layer_scale_init_value)
        elif ffn_type == 'swiglu':
            # silu(x W_gate) * (x W_up), then W_down; w12 holds [gate; up].
            self.ffn = SwiGLUFFN(embed_dims=embed_dims, feedforward_channels=feedforward_channels,
                                 layer_scale_init_value=layer_scale_init_value,
                                 dropout_layer=drop_path)
        else:
            raise ValueError(f"DINOv3Block: ffn_type must be 'mlp' or 'swiglu', got {ffn_type!r}")

    def forward(self, x: Tensor, rope: Rope, attn_mask: Optional[Tensor] = None) -> Tensor:
        x = x + self.attn(self.ln1(x), rope, attn_mask)
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class DINOv3ViT(BaseModule):
    """DINOv3 ViT/16 with registers and RoPE, as the EoMT encoder.

    Token layout after :meth:`embed`: ``[CLS, reg_1..reg_R, patch_1..patch_HW]``, no position
    embedding added: positions enter every block through :meth:`block_positions`.

    Args:
        arch: a name of :attr:`arch_zoo` or a dict with ``embed_dims``, ``num_layers``,
            ``num_heads``, ``feedforward_channels`` and optionally ``ffn_type``
            (``'mlp'`` or ``'swiglu'``).
        patch_size: 16 (DINOv3's own; other sizes need resampled kernels, which we do not do).
        in_channels: image channels.
        num_register_tokens: DINOv3 uses 4.
        layer_scale_init_value: LayerScale init (DINOv3: 1e-5).
        qkv_bias: query and value biases (all released DINOv3 ViTs have them).
        proj_bias: output-projection bias.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        norm_cfg: the LayerNorm of blocks and the final norm (eps 1e-5).
        rope_theta: RoPE base period (100).
        rope_shift / rope_jitter / rope_rescale: RoPE coordinate augmentation in training
            (DINOv3: None / None / 2, as its released configs and the authors' EoMT training).
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint=PATH)`` for DINOv3 weights in
            transformers, timm or the original layout (recognised and converted on load).  The
            authors' EoMT-DINOv3 weights are deltas to these.
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(
            embed_dims=192, num_layers=6, num_heads=3, feedforward_channels=768)),
        **dict.fromkeys(['s', 'small', 'dinov3-s', 'dinov3-small'], dict(
            embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536)),
        **dict.fromkeys(['b', 'base', 'dinov3-b', 'dinov3-base'], dict(
            embed_dims=768, num_layers=12, num_heads=12, feedforward_channels=3072)),
        **dict.fromkeys(['l', 'large', 'dinov3-l', 'dinov3-large'], dict(
            embed_dims=1024, num_layers=24, num_heads=16, feedforward_channels=4096)),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'large',
                 patch_size: int = 16,
                 in_channels: int = 3,
                 num_register_tokens: int = 4,
                 layer_scale_init_value: float = 1e-5,
                 qkv_bias: bool = True,
                 proj_bias: bool = True,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-5),
                 rope_theta: float = 100.,
                 rope_shift: Optional[float] = None,
                 rope_jitter: Optional[float] = None,
                 rope_rescale: Optional[float] = 2.,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise KeyError(f'DINOv3ViT: arch {arch!r} is not one of '
                               f'{sorted(self.arch_zoo)}; pass a dict with embed_dims, '
                               'num_layers, num_heads and feedforward_channels for another size')
            arch = self.arch_zoo[arch.lower()]
        missing = {'embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'} - set(arch)
        if missing:
            raise KeyError(f'DINOv3ViT: a custom arch dict needs the keys {sorted(missing)}')
        self.arch_settings = dict(arch)
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        self.num_heads = arch['num_heads']
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.num_prefix_tokens = 1 + num_register_tokens

        self.patch_embed = PatchEmbed(
            in_channels=in_channels, embed_dims=self.embed_dims, conv_type='Conv2d',
            kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.register_tokens = nn.Parameter(
            torch.zeros(1, num_register_tokens, self.embed_dims))
        self.rope = DINOv3RoPE(self.embed_dims // self.num_heads, rope_theta, rope_shift,
                               rope_jitter, rope_rescale)

        # On the CPU even under `with torch.device('meta')` (models built without memory).
        dpr = torch.linspace(0, drop_path_rate, self.num_layers, device='cpu').tolist()
        self.layers = ModuleList(
            DINOv3Block(self.embed_dims, self.num_heads, arch['feedforward_channels'],
                        ffn_type=arch.get('ffn_type', 'mlp'), qkv_bias=qkv_bias,
                        proj_bias=proj_bias, layer_scale_init_value=layer_scale_init_value,
                        drop_path_rate=dpr[i], norm_cfg=norm_cfg)
            for i in range(self.num_layers))
        self.ln1 = build_norm_layer(norm_cfg, self.embed_dims)
        attach_checkpoint_hook(self, 'backbone')

    @property
    def norm(self) -> nn.Module:
        """The final LayerNorm (named ``ln1`` as in :class:`EoMTViT`)."""
        return self.ln1

    def init_weights(self):
        """mmengine's initialisation; a ``Pretrained`` init_cfg loads any DINOv3 format with
        :func:`mmeomt.models.checkpoint.load_pretrained` (strict unless it says otherwise)."""
        init_weights_then_load(self, self._init_weights)

    def _init_weights(self, pretrained: bool) -> None:
        super().init_weights()
        if not pretrained:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            nn.init.normal_(self.register_tokens, std=1e-6)

    def embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patchify and prepend the prefix tokens.

        Args:
            x: normalised images ``(B, 3, H, W)``.

        Returns:
            tokens ``(B, 1 + R + H/16 * W/16, D)`` and the patch grid ``(H/16, W/16)``.
        """
        x, grid = self.patch_embed(x)
        prefix = torch.cat([self.cls_token, self.register_tokens], dim=1)
        return torch.cat([prefix.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1), tuple(grid)

    def block_positions(self, grid: Tuple[int, int], dtype: torch.dtype) -> Rope:
        """The RoPE of this forward pass for a patch grid, shared by every block.

        In training the coordinates are augmented once per call (see :class:`DINOv3RoPE`), so
        call it once per forward and hand the result to each :meth:`forward_block`.
        """
        return self.rope(grid, dtype)

    def forward_block(self, index: int, x: Tensor, attn_mask: Optional[Tensor] = None,
                      positions: Optional[Rope] = None) -> Tensor:
        """Block ``index`` on tokens ``(B, N, D)`` whose last ``h * w`` are the patches.

        Args:
            positions: the :meth:`block_positions` of this forward (required).
            attn_mask: boolean ``(B, N, N)``, True where attention is allowed.
        """
        if positions is None:
            raise ValueError('DINOv3ViT.forward_block: positions (the RoPE of block_positions) '
                             'are required')
        return self.layers[index](x, positions, attn_mask)

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        """Plain ViT features: the final-normed tokens ``(B, 1 + R + HW/256, D)``."""
        x, grid = self.embed(x)
        rope = self.block_positions(grid, x.dtype)
        for i in range(self.num_layers):
            x = self.forward_block(i, x, positions=rope)
        return (self.ln1(x), )

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer-wise lr-decay depth, as :meth:`EoMTViT.get_layer_depth` (stem 1, block i
        ``i + 1``, final norm ``n`` of ``n + 1``)."""
        return vit_layer_depth(param_name, prefix, self.num_layers)
