"""Tests for patchify / unpatchify and per-patch normalisation (``ssl_hf.layers.patches``)."""

import pytest
import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from ssl_hf.layers.patches import normalize_per_patch, patchify, unpatchify


@pytest.mark.parametrize(
    ("channels", "height", "width", "patch"),
    [(3, 32, 32, 8), (1, 32, 32, 8), (3, 16, 40, 8), (1, 24, 8, 4), (3, 12, 12, 3)],
)
def test_round_trip(generator, channels, height, width, patch):
    x = torch.randn(2, channels, height, width, generator=generator)
    patches = patchify(x, patch)
    assert patches.shape == (2, (height // patch) * (width // patch), patch * patch * channels)
    assert torch.equal(unpatchify(patches, patch, height, width), x)


@pytest.mark.parametrize("channels", [1, 3])
def test_patch_order(generator, channels):
    """Row-major patches; inside a patch (row, col, channel) with channel fastest."""
    x = torch.randn(1, channels, 16, 24, generator=generator)
    patches = patchify(x, 8)
    for index, (r, c) in enumerate((r, c) for r in range(2) for c in range(3)):
        expected = x[0, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8].permute(1, 2, 0).reshape(-1)
        assert torch.equal(patches[0, index], expected)


@pytest.fixture(scope="module")
def hf_mae():
    config = ViTMAEConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=24,
    )
    return ViTMAEForPreTraining(config).eval()


def test_matches_transformers(hf_mae, generator):
    x = torch.randn(2, 3, 32, 32, generator=generator)
    patches = patchify(x, 8)
    assert torch.equal(patches, hf_mae.patchify(x))
    assert torch.equal(unpatchify(patches, 8, 32, 32), hf_mae.unpatchify(patches))


def test_matches_transformers_non_square(hf_mae, generator):
    x = torch.randn(2, 3, 16, 40, generator=generator)
    patches = patchify(x, 8)
    assert torch.equal(patches, hf_mae.patchify(x, interpolate_pos_encoding=True))
    assert torch.equal(unpatchify(patches, 8, 16, 40), hf_mae.unpatchify(patches, (16, 40)))


def test_normalize_per_patch(generator):
    patches = 5 * torch.randn(4, 16, 192, generator=generator, dtype=torch.float64) + 3
    out = normalize_per_patch(patches)
    assert out.shape == patches.shape
    torch.testing.assert_close(out.mean(-1), torch.zeros(4, 16, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(out.var(-1), torch.ones(4, 16, dtype=torch.float64), rtol=0, atol=1e-6)
    # per patch, not per image: scaling one patch does not change the others' result
    scaled = patches.clone()
    scaled[0, 0] *= 10
    changed = normalize_per_patch(scaled)
    torch.testing.assert_close(changed[0, 0], out[0, 0], rtol=0, atol=1e-6)
    assert torch.equal(changed[1:], out[1:])
    assert torch.equal(changed[0, 1:], out[0, 1:])


def test_normalize_per_patch_matches_mae_formula(generator):
    patches = torch.rand(2, 16, 48, generator=generator)
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True, unbiased=True)
    torch.testing.assert_close(normalize_per_patch(patches), (patches - mean) / (var + 1e-6) ** 0.5)


def test_normalize_constant_patch_is_finite():
    out = normalize_per_patch(torch.full((1, 2, 12), 0.5))  # eps keeps a flat patch finite (0, not nan)
    assert torch.equal(out, torch.zeros(1, 2, 12))
    out = normalize_per_patch(torch.full((1, 2, 12), 0.7))
    assert torch.isfinite(out).all()
    assert out.abs().max() < 1e-3
