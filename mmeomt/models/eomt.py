"""EoMT: the encoder-only mask transformer (Kerssies et al., CVPR 2025, Figure 2).

A plain ViT; ``num_queries`` learnable queries are prepended to the tokens before block
``depth - num_blocks``, and the last ``num_blocks`` blocks process queries, prefix and patch
tokens jointly.  A small mask module turns the final-normed tokens into class logits
``(B, Q, C + 1)`` and mask logits ``(B, Q, H/4, W/4)``.

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


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (eps 1e-6, as timm's)."""

    def __init__(self, dims: int, eps: float = 1e-6):
        super().__init__(dims, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ScaleBlock(nn.Module):
    """2x upsampling: ConvTranspose2d(2, 2) -> GELU -> depthwise 3x3 conv -> LayerNorm2d."""

    def __init__(self, dims: int):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dims, dims, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dims, dims, kernel_size=3, padding=1, groups=dims, bias=False)
        self.norm = LayerNorm2d(dims)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv2(self.act(self.conv1(x))))


def num_upscale_blocks(patch_size: int) -> int:
    """Each upscale block doubles the resolution, from 1/patch_size towards 1/4 of the input.

    ``floor(log2(patch)) - 2``, at least 1, as the authors' code: 2 for patch 16, 1 for 14.
    """
    return max(1, int(math.log2(patch_size)) - 2)


@MODELS.register_module()
class EoMT(BaseModule):
    """The EoMT core: ViT + queries + mask module + masked attention.

    Args:
        backbone: config of the ViT (``mmeomt.EoMTViT``).
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

    def predict(self, x: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """The mask module on final-normed tokens.

        Args:
            x: ``(B, Q + P + h*w, D)`` normed tokens, queries first, then ``P`` prefix tokens.
            grid: the patch grid ``(h, w)``.

        Returns:
            mask logits ``(B, Q, 4h', 4w')`` (``h * patch / 4``) and class logits
            ``(B, Q, C + 1)``.
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
            ``(B, Q, H/4, W/4)`` and ``(B, Q, C + 1)``; the last entry is the final
            prediction, the ones before it come from the masked blocks (``num_blocks`` of them
            in training; in inference only those of blocks whose probability is above 0).
        """
        x, grid = self.backbone.embed(inputs)
        layers = self.backbone.layers
        first = len(layers) - self.num_blocks
        mask_logits_per_set, class_logits_per_set = [], []
        for i, layer in enumerate(layers):
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
            x = self.backbone.run_block(layer, x, attn_mask)
        mask_logits, class_logits = self.predict(self.backbone.norm(x), grid)
        mask_logits_per_set.append(mask_logits)
        class_logits_per_set.append(class_logits)
        return mask_logits_per_set, class_logits_per_set
