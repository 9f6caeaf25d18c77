"""Tests for the fixed 2-D sin-cos position tables (``ssl_hf.layers.pos_embed``)."""

import numpy as np
import pytest
import torch
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

from ssl_hf.layers.pos_embed import sincos_2d


def _mae_reference(dim: int, grid_size: int) -> np.ndarray:
    """`get_2d_sincos_pos_embed(dim, grid_size, cls_token=True)` of the MAE repository (`util/pos_embed.py`)."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid_size, grid_size)
    table = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), table], axis=0)


@pytest.mark.parametrize(("dim", "grid"), [(32, 4), (16, 2), (64, 7), (8, 14)])
def test_matches_mae_reference(dim, grid):
    table = sincos_2d(dim, grid)
    assert table.shape == (1, 1 + grid * grid, dim)
    assert table.dtype == torch.float32
    np.testing.assert_allclose(table[0].numpy(), _mae_reference(dim, grid), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("dim", "grid"), [(32, 4), (64, 7)])
def test_matches_transformers(dim, grid):
    """transformers 5 builds `[sin_h|cos_h|sin_w|cos_w]` and swaps the halves to the released-weights layout."""
    hf = build_2d_sinusoidal_position_embedding(grid, grid, embed_dim=dim, cls_token=True)
    half = dim // 2
    hf = torch.cat([hf[..., half:], hf[..., :half]], dim=-1)
    torch.testing.assert_close(sincos_2d(dim, grid)[0], hf, rtol=0, atol=1e-6)


def test_layout():
    dim, grid = 16, 3
    table = sincos_2d(dim, grid)[0]
    assert torch.equal(table[0], torch.zeros(dim))  # cls row
    patches = table[1:].reshape(grid, grid, dim)  # (row, col, dim), row-major
    # first half encodes the column, second half the row
    assert torch.equal(patches[0, :, : dim // 2], patches[2, :, : dim // 2])
    assert torch.equal(patches[:, 0, dim // 2 :], patches[:, 2, dim // 2 :])
    assert not torch.equal(patches[0, 0, : dim // 2], patches[0, 1, : dim // 2])
    # position 0: sin = 0, cos = 1
    quarter = dim // 4
    torch.testing.assert_close(patches[0, 0], torch.tensor(([0.0] * quarter + [1.0] * quarter) * 2))


def test_without_cls_token():
    with_cls, without = sincos_2d(32, 4), sincos_2d(32, 4, cls_token=False)
    assert without.shape == (1, 16, 32)
    assert torch.equal(without, with_cls[:, 1:])


@pytest.mark.parametrize("dim", [6, 10, 30, 33])
def test_dim_not_divisible_by_four(dim):
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(dim, 4)
