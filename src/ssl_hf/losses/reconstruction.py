"""Pixel reconstruction losses."""

from torch import Tensor


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error averaged over hidden patches only (MAE).

    Args:
        pred: `(B, L, P)` predicted patches.
        target: `(B, L, P)` target patches.
        mask: `(B, L)` True (or 1) = hidden; only these patches count.
    """
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum()
