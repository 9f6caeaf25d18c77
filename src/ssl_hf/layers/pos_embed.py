"""Fixed 2-D sine-cosine position tables (MAE `util/pos_embed.py` layout)."""

import torch
from torch import Tensor


def _sincos_1d(dim: int, positions: Tensor) -> Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.reshape(-1, 1).double() * omega  # (M, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid_size: int, cls_token: bool = True) -> Tensor:
    """Builds MAE's fixed 2-D sin-cos table.

    The first half of the channels encodes the column index and the second half the row index
    (MAE builds `meshgrid(w, h)` and calls the first coordinate "h"; HF ViTMAE and released weights share this).

    Args:
        dim: Embedding width, divisible by 4.
        grid_size: Patches per side.
        cls_token: Prepend an all-zero row for the cls token.

    Returns:
        `(1, [1 +] grid_size**2, dim)` float32.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position tables need a width divisible by 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    table = torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table], dim=0)
    return table.float().unsqueeze(0)
