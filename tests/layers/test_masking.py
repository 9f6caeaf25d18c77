"""Tests for noise-driven random masking (``ssl_hf.layers.masking``)."""

import pytest
import torch
from transformers import ViTMAEConfig
from transformers.models.vit_mae.modeling_vit_mae import ViTMAEEmbeddings

from ssl_hf.layers.masking import MaskSample, gather_tokens, random_masking


B, L, D = 3, 16, 5


@pytest.fixture
def noise(generator):
    return torch.rand(B, L, generator=generator)


@pytest.mark.parametrize("num_keep", [0, 1, 4, 15, 16])
def test_shapes_and_counts(noise, num_keep):
    sample = random_masking(noise, num_keep)
    assert isinstance(sample, MaskSample)
    assert sample.keep_indices.shape == (B, num_keep)
    assert sample.restore_indices.shape == (B, L)
    assert sample.mask.shape == (B, L)
    assert sample.mask.dtype == torch.bool
    assert sample.mask.sum(1).tolist() == [L - num_keep] * B
    for b in range(B):
        kept = set(sample.keep_indices[b].tolist())
        assert len(kept) == num_keep
        assert kept == set(torch.nonzero(~sample.mask[b]).flatten().tolist())  # kept <=> not masked
        assert sorted(sample.restore_indices[b].tolist()) == list(range(L))  # a permutation


@pytest.mark.parametrize("num_keep", [1, 4, 12])
def test_lowest_noise_kept(noise, num_keep):
    sample = random_masking(noise, num_keep)
    for b in range(B):
        expected = torch.argsort(noise[b])[:num_keep]
        assert sample.keep_indices[b].tolist() == expected.tolist()  # in shuffle (ascending noise) order
        assert noise[b][~sample.mask[b]].max() < noise[b][sample.mask[b]].min()


def test_ascending_noise_keeps_first_patches():
    sample = random_masking(torch.arange(L, dtype=torch.float32).expand(B, L), 4)
    assert sample.keep_indices.tolist() == [[0, 1, 2, 3]] * B
    assert sample.restore_indices.tolist() == [list(range(L))] * B
    assert sample.mask[:, :4].logical_not().all()
    assert sample.mask[:, 4:].all()


def test_same_noise_same_mask(noise):
    first, second = random_masking(noise, 5), random_masking(noise.clone(), 5)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    other = random_masking(torch.rand(B, L, generator=torch.Generator().manual_seed(1)), 5)
    assert not torch.equal(first.mask, other.mask)


def test_gather_tokens(generator):
    tokens = torch.randn(B, L, D, generator=generator)
    indices = torch.tensor([[3, 0], [15, 15], [7, 8]])
    out = gather_tokens(tokens, indices)
    assert out.shape == (B, 2, D)
    for b in range(B):
        for k in range(2):
            assert torch.equal(out[b, k], tokens[b, indices[b, k]])


@pytest.mark.parametrize("num_keep", [4, 16])
def test_unshuffle_restores_order(noise, generator, num_keep):
    """Encoder keeps `keep_indices`; the decoder appends placeholders and un-shuffles with `restore_indices`."""
    tokens = torch.randn(B, L, D, generator=generator)
    sample = random_masking(noise, num_keep)
    visible = gather_tokens(tokens, sample.keep_indices)
    placeholder = torch.full((B, L - num_keep, D), -100.0)
    restored = gather_tokens(torch.cat([visible, placeholder], dim=1), sample.restore_indices)
    assert restored.shape == (B, L, D)
    assert torch.equal(restored[~sample.mask], tokens[~sample.mask])
    assert (restored[sample.mask] == -100.0).all()
    if num_keep == L:
        assert torch.equal(restored, tokens)


@pytest.mark.parametrize("mask_ratio", [0.75, 0.5, 0.0])
def test_matches_transformers_vit_mae(noise, generator, mask_ratio):
    config = ViTMAEConfig(hidden_size=D + 3, image_size=32, patch_size=8, mask_ratio=mask_ratio)
    sequence = torch.randn(B, L, config.hidden_size, generator=generator)
    hf_visible, hf_mask, hf_restore = ViTMAEEmbeddings(config).random_masking(sequence, noise)
    sample = random_masking(noise, int(L * (1 - mask_ratio)))
    assert torch.equal(gather_tokens(sequence, sample.keep_indices), hf_visible)
    assert torch.equal(sample.mask, hf_mask.bool())
    assert torch.equal(sample.restore_indices, hf_restore)
