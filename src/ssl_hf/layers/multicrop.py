"""Multi-crop batching: every crop of one resolution goes through the backbone as one batch."""

from torch import Tensor


def crops_by_view(pixel_values: Tensor) -> Tensor:
    """`(B, G, C, H, W)` -> `(G * B, C, H, W)`, view-major, so one backbone call runs all crops of one resolution.

    `out.unflatten(0, (G, B))` recovers the view axis of anything computed per crop.
    """
    if pixel_values.ndim != 5:
        raise ValueError(
            f"expected crops of shape (batch, crops, channels, height, width), got {tuple(pixel_values.shape)}; the "
            "multi-crop views preset produces them."
        )
    return pixel_values.transpose(0, 1).flatten(0, 1)
