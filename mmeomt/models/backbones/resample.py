"""Resampling of a ViT's patch embedding and position grid to another patch size or grid.

Used on load, to fit DINOv2 weights (patch 14, a 37x37 grid) to EoMT's patch 16 at the training
crop (:mod:`mmeomt.models.checkpoint`), and in the forward pass, for inputs of another size
than the one the position grid was built for (as timm's ``dynamic_img_size``).
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def resample_patch_embed(weight: Tensor, new_size: Sequence[int]) -> Tensor:
    """Resize patch-embedding kernels so that patchifying a resized image gives the same tokens.

    FlexiViT (Beyer et al., CVPR 2023): with ``B`` the bicubic (antialiased) resize of a
    ``(h, w)`` patch to ``new_size``, the new kernel ``w'`` should satisfy
    ``<B x, w'> = <x, w>`` for every patch ``x``, i.e. ``B^T w' = w``; we take the least-norm
    solution ``w' = pinv(B^T) w``.  Same result as timm's ``resample_patch_embed`` defaults.

    Args:
        weight: kernels ``(D, C, h, w)``.
        new_size: ``(h', w')``.

    Returns:
        ``(D, C, h', w')``, in the dtype of ``weight``.
    """
    if weight.dim() != 4:
        raise ValueError(f'resample_patch_embed: weight must be (D, C, h, w), got shape '
                         f'{tuple(weight.shape)}')
    old_size, new_size = tuple(weight.shape[-2:]), tuple(int(s) for s in new_size)
    if old_size == new_size:
        return weight
    num_old = old_size[0] * old_size[1]
    # Column j of B is the resized j-th basis patch; float64 keeps the pseudo-inverse accurate.
    basis = torch.eye(num_old, dtype=torch.float64, device=weight.device)
    resized = F.interpolate(basis.reshape(num_old, 1, *old_size), size=new_size, mode='bicubic',
                            antialias=True, align_corners=False)
    resize_op = resized.reshape(num_old, -1).T  # B: (h'w', hw)
    kernels = weight.reshape(-1, num_old).to(torch.float64)  # rows are w^T
    new = kernels @ torch.linalg.pinv(resize_op)  # w'^T = w^T pinv(B)
    return new.reshape(*weight.shape[:2], *new_size).to(weight.dtype)


def resample_pos_embed(pos_embed: Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                       mode: str = 'bicubic') -> Tensor:
    """Resize the position embeddings of patch tokens to another grid.

    As timm's ``resample_abs_pos_embed`` defaults (bicubic, ``antialias=True``,
    ``align_corners=False``, computed in float32), which timm uses both on load and for
    ``dynamic_img_size`` inputs.

    Args:
        pos_embed: ``(1, h * w, D)``, row-major over the ``(h, w)`` grid.
        old_grid: ``(h, w)``.
        new_grid: ``(h', w')``.
        mode: ``F.interpolate`` mode; antialiased where torch supports it (bilinear, bicubic).

    Returns:
        ``(1, h' * w', D)`` in the dtype of ``pos_embed``.
    """
    old_grid, new_grid = tuple(int(s) for s in old_grid), tuple(int(s) for s in new_grid)
    if pos_embed.dim() != 3 or pos_embed.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(f'resample_pos_embed: expected pos_embed (1, {old_grid[0]}*'
                         f'{old_grid[1]}, D), got {tuple(pos_embed.shape)}')
    if old_grid == new_grid:
        return pos_embed
    dims = pos_embed.shape[-1]
    grid = pos_embed.float().reshape(1, *old_grid, dims).permute(0, 3, 1, 2)
    smooth = mode in ('bilinear', 'bicubic')
    grid = F.interpolate(grid, size=new_grid, mode=mode, antialias=smooth,
                         align_corners=False if smooth else None)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, dims).to(pos_embed.dtype)


__all__ = ['resample_patch_embed', 'resample_pos_embed']
