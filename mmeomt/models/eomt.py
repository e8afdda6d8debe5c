"""EoMT: the encoder-only mask transformer (Kerssies et al., CVPR 2025, Figure 2).

A plain ViT; ``num_queries`` learnable queries are prepended to the tokens before block
``depth - num_blocks``, and the last ``num_blocks`` blocks process queries, prefix and patch
tokens jointly.  A small mask module turns the final-normed tokens into class logits
``(B, Q, C + 1)`` and mask logits ``(B, Q, H_m, W_m)``: the patch grid ``(H // p, W // p)``
(``p`` = patch size) upscaled ``2 ** n`` times by the ``n = num_upscale_blocks(p)`` upscale blocks,
i.e. ``H/4`` for ``p`` = 8, 16 or 32 (16 in every published model), ``H/7`` for ``p`` = 14.

During training each of the last ``num_blocks`` blocks is preceded by masked attention: the mask
module predicts masks from the current tokens, and query ``i`` may attend patch ``j`` only where
its mask logit is positive.  Block ``k`` applies that mask to each query with probability
``attn_mask_probs[k]``, which ``MaskAnnealingHook`` anneals from 1 to 0.  The intermediate
predictions are supervised too (deep supervision).  At inference with the probabilities at 0 the
intermediate mask modules are skipped; this is where EoMT's speed comes from.

This module knows nothing of data samples: the task adapters (``EoMTDetector``,
``EoMTSegmentor``) feed it images and read its logits.
"""
import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmeomt.registry import MODELS
from .checkpoint.hook import attach_checkpoint_hook


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (eps 1e-6, as timm's).

    Not mmpretrain's ``LayerNorm2d``: the values are bit-identical, but it returns a contiguous
    copy where this (as timm's, which the authors use) returns the channels-last view, and the
    layers after it (the next ``ConvTranspose2d``, the mask einsum) then run other kernels: the
    fp32 mask logits of EoMT would change by up to ~1e-6.
    """

    def __init__(self, dims: int, eps: float = 1e-6):
        super().__init__(dims, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Upsample2x2(torch.autograd.Function):
    """``conv_transpose2d(x, weight, bias, stride=2)`` for a 2 x 2 kernel, with a GEMM backward.

    The forward is torch's (the same values as ``nn.ConvTranspose2d``).  The backward uses that
    a 2 x 2 kernel at stride 2 does not overlap: every output pixel is one input pixel times one
    of the four ``(C_in, C_out)`` matrices, so both gradients are single matrix products.  On
    the CPU torch's transposed-convolution backward is ~2x slower than those products, in
    bfloat16 most: the main job's step spent 25 of ~117 ms in convolution backwards, 14 after.
    Under autocast the products run in the forward's compute type, as torch's backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv_transpose2d(x, weight, bias, stride=2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        (B, C, h, w), O = x.shape, weight.shape[1]
        dtype = grad.dtype  # the forward's compute type (bfloat16 under autocast)
        # Rows: input pixels (b, i, j); columns: (di, dj, o), output pixel (2i + di, 2j + dj).
        g = grad.reshape(B, O, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(-1, 4 * O)
        kernel = weight.to(dtype).permute(0, 2, 3, 1).reshape(C, 4 * O)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ kernel.T).reshape(B, h, w, C).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            rows = x.to(dtype).permute(0, 2, 3, 1).reshape(-1, C)
            grad_w = (rows.T @ g).reshape(C, 2, 2, O).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


class ScaleBlock(nn.Module):
    """2x upsampling: ConvTranspose2d(2, 2) -> GELU -> depthwise 3x3 conv -> LayerNorm2d."""

    def __init__(self, dims: int):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dims, dims, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dims, dims, kernel_size=3, padding=1, groups=dims, bias=False)
        self.norm = LayerNorm2d(dims)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.device.type == 'cpu':
            x = Upsample2x2.apply(x, self.conv1.weight, self.conv1.bias)
        else:
            x = self.conv1(x)
        return self.norm(self.conv2(self.act(x)))


def num_upscale_blocks(patch_size: int) -> int:
    """The number ``n`` of upscale blocks: ``floor(log2(patch)) - 2``, at least 1, as the
    authors' code (2 for patch 16, 1 for 14).

    Each block doubles the resolution of the patch grid, so the masks have ``(H // patch) *
    2 ** n`` rows: 1/4 of the input for patch 8, 16 or 32 (powers of two from 8 on), 1/7 for
    patch 14, 1/2 for patch 4.
    """
    return max(1, int(math.log2(patch_size)) - 2)


@MODELS.register_module()
class EoMT(BaseModule):
    """The EoMT core: ViT + queries + mask module + masked attention.

    Args:
        backbone: config of the ViT: ``mmeomt.EoMTViT`` (DINOv2) or ``mmeomt.DINOv3ViT``.
            The core uses its ``embed``, ``block_positions``, ``forward_block``, ``layers``,
            ``norm``, ``embed_dims``, ``num_prefix_tokens`` and ``patch_size``.
        num_classes: ``C``; the class head predicts ``C + 1`` logits, the last is "no object".
        num_queries: ``Q``, 200 for panoptic/instance, 100 for semantic.
        num_blocks: ``L2``, the last blocks that see the queries (S/B 3, L 4, g 5).
        masked_attn_enabled: False turns masked attention (and deep supervision) off entirely.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 backbone: dict,
                 num_classes: int,
                 num_queries: int = 200,
                 num_blocks: int = 4,
                 masked_attn_enabled: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        depth = len(self.backbone.layers)
        if not 1 <= num_blocks <= depth:
            raise ValueError(f'EoMT: num_blocks must be in [1, {depth}] (the backbone depth), '
                             f'got {num_blocks}')
        dims = self.backbone.embed_dims
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.num_blocks = num_blocks
        self.masked_attn_enabled = masked_attn_enabled

        self.queries = nn.Embedding(num_queries, dims)
        self.class_head = nn.Linear(dims, num_classes + 1)
        self.mask_head = nn.Sequential(
            nn.Linear(dims, dims), nn.GELU(),
            nn.Linear(dims, dims), nn.GELU(),
            nn.Linear(dims, dims))
        self.upscale = nn.Sequential(
            *[ScaleBlock(dims) for _ in range(num_upscale_blocks(self.backbone.patch_size))])
        # Probability, per masked block, that a query's attention mask is applied.
        self.register_buffer('attn_mask_probs', torch.ones(num_blocks))
        # A bare core loads whole-model checkpoints of any format (inside an adapter, the
        # adapter's hook does).
        attach_checkpoint_hook(self, 'eomt')

    def predict(self, x: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """The mask module on final-normed tokens.

        Args:
            x: ``(B, Q + P + h*w, D)`` normed tokens, queries first, then ``P`` prefix tokens.
            grid: the patch grid ``(h, w)``.

        Returns:
            mask logits ``(B, Q, h * 2**n, w * 2**n)`` (``n = len(self.upscale)``; ``(H/4,
            W/4)`` at patch 16) and class logits ``(B, Q, C + 1)``.
        """
        q = x[:, :self.num_queries]
        patches = x[:, self.num_queries + self.backbone.num_prefix_tokens:]
        patches = patches.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        mask_logits = torch.einsum('bqc,bchw->bqhw', self.mask_head(q), self.upscale(patches))
        return mask_logits, self.class_head(q)

    def attn_mask(self, mask_logits: Tensor, grid: Tuple[int, int], num_tokens: int,
                  prob: Tensor) -> Tensor:
        """Masked attention for one block.

        Query ``i`` may attend patch ``j`` only where its mask logit (bilinearly resized to the
        patch grid) is positive; queries and prefix tokens are always visible, and patch and
        prefix tokens attend everything.  Each query's mask is applied with probability
        ``prob`` (per query, per image); otherwise the query attends all patches.

        Returns:
            boolean ``(B, N, N)``, True where attention is allowed.
        """
        B, Q = mask_logits.shape[:2]
        start = Q + self.backbone.num_prefix_tokens
        mask = torch.ones(B, num_tokens, num_tokens, dtype=torch.bool, device=mask_logits.device)
        coarse = F.interpolate(mask_logits, grid, mode='bilinear')
        mask[:, :Q, start:] = coarse.flatten(2) > 0
        if prob < 1:
            # Per query and image: keep the mask with probability `prob`, else attend all.
            unmasked = torch.rand(B, Q, device=mask.device) > prob
            mask[:, :Q, start:] |= unmasked[..., None]
        return mask

    def forward(self, inputs: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        """Figure 2 of the paper.

        Args:
            inputs: normalised images ``(B, 3, H, W)``.

        Returns:
            ``(mask_logits, class_logits)``: lists over prediction sets, each
            ``(B, Q, H_m, W_m)`` (see the module docstring; ``H/4`` at patch 16) and
            ``(B, Q, C + 1)``; the last entry is the final
            prediction, the ones before it come from the masked blocks (``num_blocks`` of them
            in training; in inference only those of blocks whose probability is above 0).
        """
        x, grid = self.backbone.embed(inputs)
        # None for DINOv2 (absolute embeddings, added in embed); DINOv3's RoPE, drawn once per
        # forward (its coordinates are augmented in training) and shared by every block.
        positions = self.backbone.block_positions(grid, x.dtype)
        depth = len(self.backbone.layers)
        first = depth - self.num_blocks
        mask_logits_per_set, class_logits_per_set = [], []
        for i in range(depth):
            if i == first:
                queries = self.queries.weight[None].expand(x.shape[0], -1, -1)
                x = torch.cat([queries.to(x.dtype), x], dim=1)
            attn_mask = None
            if i >= first and self.masked_attn_enabled and (
                    self.training or self.attn_mask_probs[i - first] > 0):
                mask_logits, class_logits = self.predict(self.backbone.norm(x), grid)
                mask_logits_per_set.append(mask_logits)
                class_logits_per_set.append(class_logits)
                attn_mask = self.attn_mask(mask_logits, grid, x.shape[1],
                                           self.attn_mask_probs[i - first])
            x = self.backbone.forward_block(i, x, attn_mask, positions)
        mask_logits, class_logits = self.predict(self.backbone.norm(x), grid)
        mask_logits_per_set.append(mask_logits)
        class_logits_per_set.append(class_logits)
        return mask_logits_per_set, class_logits_per_set
