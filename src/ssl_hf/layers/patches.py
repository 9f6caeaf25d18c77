"""Patchify / unpatchify and per-patch normalisation (MAE's `norm_pix_loss`)."""

import torch
from torch import Tensor


def patchify(pixel_values: Tensor, patch_size: int) -> Tensor:
    """Cuts images into flattened patches, in MAE/HF order `(h, w, p_row, p_col, channel)`.

    Args:
        pixel_values: `(B, C, H, W)` images; `H` and `W` divisible by `patch_size`.
        patch_size: Patch side in pixels.

    Returns:
        `(B, L, p*p*C)` with `L = (H/p) * (W/p)`, patches in row-major order.
    """
    B, C, H, W = pixel_values.shape
    h, w = H // patch_size, W // patch_size
    x = pixel_values.reshape(B, C, h, patch_size, w, patch_size)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(B, h * w, patch_size * patch_size * C)


def unpatchify(patches: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """Inverse of `patchify`.

    Args:
        patches: `(B, L, p*p*C)`.
        patch_size: Patch side in pixels.
        height: Image height in pixels.
        width: Image width in pixels.
    """
    B, L, P = patches.shape
    h, w = height // patch_size, width // patch_size
    C = P // (patch_size * patch_size)
    x = patches.reshape(B, h, w, patch_size, patch_size, C)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(B, C, height, width)


def normalize_per_patch(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardises each patch by its own mean and (unbiased) variance, as MAE's `norm_pix_loss`.

    Args:
        patches: `(..., P)` flattened patches.
        eps: Added to the variance before the square root.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5
