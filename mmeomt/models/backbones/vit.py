"""The EoMT encoder: a plain DINOv2 ViT with register tokens.

Parameter names follow mmpretrain's ``VisionTransformer`` (``patch_embed.projection``,
``layers.{i}.ln1``, ``layers.{i}.attn.qkv``, ``layers.{i}.attn.gamma1``, ``layers.{i}.ffn``,
final norm ``ln1``).  DINOv2 checkpoints of mmpretrain, timm, the original release and
transformers are recognised and converted on load by :mod:`mmeomt.models.checkpoint`
(mmpretrain's [CLS] position folded into ``cls_token``, 14x14 kernels and the 37x37 grid
resampled to the model).

Why not mmpretrain's ``VisionTransformer`` itself: it has no register tokens, it adds a position
embedding to the [CLS] token (EoMT, like timm's ``*_reg4_dinov2``, embeds positions of patch
tokens only), and its blocks cannot take an attention mask.  We reuse its layers
(``TransformerEncoderLayer``, mmcv's ``PatchEmbed``) and its key names.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer
from mmpretrain.models.utils import build_norm_layer, to_2tuple
from mmcv.cnn.bricks.transformer import PatchEmbed
from torch import Tensor, nn

from mmeomt.registry import MODELS
from ..checkpoint.hook import attach_checkpoint_hook, init_weights_then_load
from .resample import resample_pos_embed


def attention(attn: nn.Module, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
    """Multi-head self-attention of an mmpretrain ``MultiheadAttention`` with an optional mask.

    mmpretrain's own ``forward`` takes no mask, so we run its projections here.

    Args:
        attn: an mmpretrain ``MultiheadAttention`` (``qkv``, ``proj``, ``gamma1``).
        x: tokens ``(B, N, D)`` (already layer-normed).
        attn_mask: boolean ``(B, N, N)``, True where a token (row) may attend another (column).

    Returns:
        ``(B, N, D)``, after the output projection and LayerScale.
    """
    B, N, D = x.shape
    q, k, v = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dims).permute(2, 0, 3, 1, 4)
    if attn_mask is not None:
        attn_mask = attn_mask[:, None]  # broadcast over heads
    dropout_p = attn.attn_drop if attn.training else 0.
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    x = attn.proj(x.transpose(1, 2).reshape(B, N, D))
    return attn.out_drop(attn.gamma1(attn.proj_drop(x)))


def block_forward(layer: TransformerEncoderLayer, x: Tensor,
                  attn_mask: Optional[Tensor] = None) -> Tensor:
    """One pre-norm ViT block, ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``."""
    x = x + attention(layer.attn, layer.ln1(x), attn_mask)
    return layer.ffn(layer.ln2(x), identity=x)


def vit_layer_depth(param_name: str, prefix: str, num_blocks: int) -> Tuple[int, int]:
    """Layer-wise lr-decay depth of a ViT parameter, as mmpretrain's layer-decay constructor asks.

    EoMT (docs/method.md §4) gives block ``i`` of ``n`` the factor ``decay ** (n - 1 - i)`` and
    the stem (patch/position embeddings, CLS, registers) the deepest block's factor
    ``decay ** (n - 1)``; the final norm is not decayed.  With ``num_layers = n + 1`` and factor
    ``decay ** (num_layers - 1 - depth)`` that is depth ``i + 1`` for block ``i``, 1 for the stem
    and ``n`` for the final norm.

    Args:
        param_name: a parameter name of the whole model.
        prefix: where the ViT sits in it (``''`` or ending with ``'.'``).
        num_blocks: ``n``.

    Returns:
        ``(depth, num_layers)``.
    """
    num_layers = num_blocks + 1
    if not param_name.startswith(prefix):
        return num_layers - 1, num_layers
    name = param_name[len(prefix):]
    if name.startswith(('cls_token', 'register_tokens', 'pos_embed', 'patch_embed')):
        return 1, num_layers
    if name.startswith('layers.'):
        return int(name.split('.')[1]) + 1, num_layers
    return num_layers - 1, num_layers


@MODELS.register_module()
class EoMTViT(BaseModule):
    """DINOv2-style ViT with register tokens, LayerScale and (giant) SwiGLU MLP.

    Token layout after :meth:`embed`: ``[CLS, reg_1..reg_R, patch_1..patch_HW]``; position
    embeddings are added to the patch tokens only.

    Args:
        arch: a name of :attr:`arch_zoo` or a dict with ``embed_dims``, ``num_layers``,
            ``num_heads``, ``feedforward_channels`` and optionally ``ffn_type``.
        img_size: training crop ``(H, W)``; fixes the position-embedding grid
            ``(H / patch_size, W / patch_size)``.  Other input sizes resize it on the fly.
        patch_size: EoMT uses 16 (DINOv2's 14x14 kernels are resampled on load).
        num_register_tokens: DINOv2-with-registers uses 4.
        layer_scale_init_value: LayerScale init (DINOv2: 1e-5); 0 disables LayerScale.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        norm_cfg: the LayerNorm of blocks and the final norm.
        interpolate_mode: how the position embedding is resized to inputs of another size
            (antialiased for bilinear/bicubic, as timm's ``dynamic_img_size``).
        with_cp: activation checkpointing of the blocks (the name mmpretrain's and mmdet's
            backbones use): in training each block's activations are recomputed during the
            backward pass instead of being kept, which saves memory at the cost of a second
            forward of every block.  Outputs and gradients are unchanged (dropout and drop
            path replay the same random numbers).
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint=URL)`` for DINOv2 weights in
            mmpretrain, timm or transformers format (recognised and converted on load).
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(
            embed_dims=192, num_layers=6, num_heads=3, feedforward_channels=768)),
        **dict.fromkeys(['s', 'small', 'dinov2-s', 'dinov2-small'], dict(
            embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536)),
        **dict.fromkeys(['b', 'base', 'dinov2-b', 'dinov2-base'], dict(
            embed_dims=768, num_layers=12, num_heads=12, feedforward_channels=3072)),
        **dict.fromkeys(['l', 'large', 'dinov2-l', 'dinov2-large'], dict(
            embed_dims=1024, num_layers=24, num_heads=16, feedforward_channels=4096)),
        **dict.fromkeys(['g', 'giant', 'dinov2-g', 'dinov2-giant'], dict(
            embed_dims=1536, num_layers=40, num_heads=24, feedforward_channels=6144,
            ffn_type='swiglu_fused')),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'large',
                 img_size: Union[int, Sequence[int]] = 640,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 num_register_tokens: int = 4,
                 layer_scale_init_value: float = 1e-5,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 interpolate_mode: str = 'bicubic',
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise KeyError(f'EoMTViT: arch {arch!r} is not one of {sorted(self.arch_zoo)}; '
                               'pass a dict with embed_dims, num_layers, num_heads and '
                               'feedforward_channels for a custom size')
            arch = self.arch_zoo[arch.lower()]
        missing = {'embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'} - set(arch)
        if missing:
            raise KeyError(f'EoMTViT: a custom arch dict needs the keys {sorted(missing)}')
        self.arch_settings = dict(arch)
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        self.num_heads = arch['num_heads']
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.num_prefix_tokens = 1 + num_register_tokens
        self.interpolate_mode = interpolate_mode
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(
            in_channels=in_channels, embed_dims=self.embed_dims, conv_type='Conv2d',
            kernel_size=patch_size, stride=patch_size, input_size=self.img_size)
        self.patch_resolution = self.patch_embed.init_out_size
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.register_tokens = nn.Parameter(
            torch.zeros(1, num_register_tokens, self.embed_dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, self.embed_dims))

        # On the CPU even under `with torch.device('meta')` (models built without memory).
        dpr = torch.linspace(0, drop_path_rate, self.num_layers, device='cpu').tolist()
        self.layers = ModuleList(
            TransformerEncoderLayer(
                embed_dims=self.embed_dims,
                num_heads=self.num_heads,
                feedforward_channels=arch['feedforward_channels'],
                layer_scale_init_value=layer_scale_init_value,
                drop_path_rate=dpr[i],
                qkv_bias=qkv_bias,
                ffn_type=arch.get('ffn_type', 'origin'),
                norm_cfg=norm_cfg) for i in range(self.num_layers))
        self.ln1 = build_norm_layer(norm_cfg, self.embed_dims)
        # DINOv2 weights of any layout load into a ViT on its own (inside an EoMT model, the
        # model's hook fits it).
        attach_checkpoint_hook(self, 'backbone')

    @property
    def norm(self) -> nn.Module:
        """The final LayerNorm (named ``ln1`` as in mmpretrain)."""
        return self.ln1

    def init_weights(self):
        """mmengine's initialisation; a ``Pretrained`` init_cfg loads any DINOv2 format with
        :func:`mmeomt.models.checkpoint.load_pretrained` (strict unless it says otherwise)."""
        init_weights_then_load(self, self._init_weights)

    def _init_weights(self, pretrained: bool) -> None:
        super().init_weights()
        if not pretrained:
            trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
            nn.init.normal_(self.register_tokens, std=1e-6)

    def embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patchify and prepend the prefix tokens.

        Args:
            x: normalised images ``(B, 3, H, W)``.

        Returns:
            tokens ``(B, 1 + R + H/p * W/p, D)`` and the patch grid ``(H/p, W/p)``.
        """
        B = x.shape[0]
        x, grid = self.patch_embed(x)
        x = x + self.resized_pos_embed(grid)
        prefix = torch.cat([self.cls_token, self.register_tokens], dim=1).expand(B, -1, -1)
        return torch.cat([prefix, x], dim=1), tuple(grid)

    def block_positions(self, grid: Tuple[int, int], dtype: torch.dtype) -> None:
        """What the blocks need to know of token positions: nothing here, since the absolute
        position embeddings were added once in :meth:`embed` (DINOv3's RoPE is per block)."""
        return None

    def forward_block(self, index: int, x: Tensor, attn_mask: Optional[Tensor] = None,
                      positions: None = None) -> Tensor:
        """Block ``index`` on tokens ``(B, N, D)``, with an optional boolean ``(B, N, N)``
        attention mask (True where attention is allowed); checkpointed when ``with_cp`` is set
        and gradients are needed."""
        if positions is not None:
            raise ValueError('EoMTViT.forward_block: positions must be None (the position '
                             'embeddings are added in embed)')
        layer = self.layers[index]
        if self.with_cp and torch.is_grad_enabled():
            # The non-reentrant variant, which torch recommends: it accepts inputs that need no
            # gradient (the boolean mask) and nested autograd.
            return cp.checkpoint(block_forward, layer, x, attn_mask, use_reentrant=False)
        return block_forward(layer, x, attn_mask)

    def resized_pos_embed(self, grid: Sequence[int]) -> Tensor:
        """Position embeddings ``(1, h * w, D)`` of the patch grid ``(h, w)``.

        Other input sizes resize the training grid's embeddings as timm does for dynamic sizes
        and as checkpoints of another grid are resized on load (antialiased bicubic), not as
        mmpretrain does.

        In a graph exported with a dynamic input size (``torch.export``, as the ONNX export
        does) the grid is symbolic.  ``resample_pos_embed`` would fix it to the example's size
        (it takes Python ints and skips the resize at the training grid), so there the resize is
        one graph operation that follows the input size: the same interpolation, and the
        identity at the training grid (the cubic and linear kernels are 1 at 0 and 0 at the
        other integers).
        """
        if not any(isinstance(s, torch.SymInt) for s in grid):
            return resample_pos_embed(self.pos_embed, self.patch_resolution, grid,
                                      mode=self.interpolate_mode)
        smooth = self.interpolate_mode in ('bilinear', 'bicubic')
        pos = self.pos_embed.float().reshape(1, *self.patch_resolution, self.embed_dims)
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=tuple(grid),
                            mode=self.interpolate_mode, antialias=smooth,
                            align_corners=False if smooth else None)
        return pos.permute(0, 2, 3, 1).flatten(1, 2).to(self.pos_embed.dtype)

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        """Plain ViT features: the final-normed tokens ``(B, 1 + R + HW/p^2, D)``."""
        x, _ = self.embed(x)
        for i in range(self.num_layers):
            x = self.forward_block(i, x)
        return (self.ln1(x), )

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer-wise lr-decay depth of a parameter, as mmpretrain's layer-decay constructor asks
        (see :func:`vit_layer_depth`).

        Returns:
            ``(depth, num_layers)``.
        """
        return vit_layer_depth(param_name, prefix, self.num_layers)
