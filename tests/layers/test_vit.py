"""Tests for MAE-style use of a stock ``ViTModel`` (``ssl_hf.layers.vit``)."""

import math

import pytest
import torch
from torch import nn
from transformers import ViTModel

from ssl_hf import backbone_config
from ssl_hf.layers.pos_embed import sincos_2d
from ssl_hf.layers.vit import encode_visible, init_mae_style


B, L, D = 2, 16, 32


def _vit(seed: int = 0) -> ViTModel:
    torch.manual_seed(seed)
    config = backbone_config(
        "vit-tiny", 32, 8, hidden_size=D, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
    )
    return ViTModel(config, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def vit():
    return _vit()


def _ascending(batch: int, length: int) -> torch.Tensor:
    return torch.arange(length, dtype=torch.float32).expand(batch, length)


def test_no_masking_equals_vit_forward(vit, generator):
    x = torch.randn(B, 3, 32, 32, generator=generator)
    with torch.no_grad():
        latent, sample = encode_visible(vit, x, noise=_ascending(B, L), mask_ratio=0.0)
        expected = vit(x).last_hidden_state
    assert latent.shape == (B, 1 + L, D)
    assert (latent - expected).abs().max().item() == 0
    assert torch.equal(latent, expected)
    assert not sample.mask.any()


def test_masked_shapes_and_visible_tokens(vit, generator):
    x = torch.randn(B, 3, 32, 32, generator=generator)
    noise = torch.rand(B, L, generator=generator)
    with torch.no_grad():
        latent, sample = encode_visible(vit, x, noise=noise, mask_ratio=0.75)
    assert latent.shape == (B, 1 + 4, D)
    assert sample.mask.sum(1).tolist() == [12] * B
    assert sample.keep_indices.tolist() == torch.argsort(noise, 1)[:, :4].tolist()
    # the same noise gives the same latent; other noise hides other patches
    with torch.no_grad():
        again, _ = encode_visible(vit, x, noise=noise.clone(), mask_ratio=0.75)
        other, _ = encode_visible(vit, x, noise=noise.flip(1), mask_ratio=0.75)
    assert torch.equal(latent, again)
    assert not torch.allclose(latent, other)


def test_visible_tokens_ignore_hidden_patches(vit, generator):
    """Changing the pixels of a hidden patch does not change the latent (hidden patches are never encoded)."""
    x = torch.randn(1, 3, 32, 32, generator=generator)
    noise = _ascending(1, L)  # keeps patches 0-3 (the top row)
    changed = x.clone()
    changed[..., 24:, 24:] = 5.0  # last patch, hidden
    with torch.no_grad():
        latent, _ = encode_visible(vit, x, noise=noise, mask_ratio=0.75)
        same, _ = encode_visible(vit, changed, noise=noise, mask_ratio=0.75)
        changed[..., :8, :8] = 5.0  # first patch, visible
        different, _ = encode_visible(vit, changed, noise=noise, mask_ratio=0.75)
    assert torch.equal(latent, same)
    assert not torch.allclose(latent, different)


def test_random_noise_when_none(vit, generator):
    x = torch.randn(B, 3, 32, 32, generator=generator)
    with torch.no_grad():
        latent, sample = encode_visible(vit, x, noise=None, mask_ratio=0.5)
    assert latent.shape == (B, 1 + 8, D)
    assert sample.mask.sum(1).tolist() == [8] * B


def test_wrong_size_raises(vit):
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        encode_visible(vit, torch.zeros(1, 3, 48, 48), noise=None, mask_ratio=0.75)


def test_interpolated_position_encoding(vit, generator):
    x = torch.randn(B, 3, 48, 48, generator=generator)
    with torch.no_grad():
        latent, sample = encode_visible(vit, x, noise=None, mask_ratio=0.75, interpolate_pos_encoding=True)
        full, _ = encode_visible(vit, x, noise=_ascending(B, 36), mask_ratio=0.0, interpolate_pos_encoding=True)
        expected = vit(x, interpolate_pos_encoding=True).last_hidden_state
    assert latent.shape == (B, 1 + 9, D)  # 36 patches, a quarter kept
    assert sample.mask.shape == (B, 36)
    assert torch.equal(full, expected)


def test_init_mae_style():
    vit = _vit(seed=1)
    vit.apply(init_mae_style)
    emb = vit.embeddings
    assert torch.equal(emb.position_embeddings.data, sincos_2d(D, 4))
    assert 0.005 < emb.cls_token.std().item() < 0.05
    linears = [m for m in vit.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 6  # q, k, v, attention output, MLP in / out per layer
    for module in linears:
        fan_out, fan_in = module.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert module.weight.abs().max().item() <= bound
        assert module.weight.abs().max().item() > 0.8 * bound  # uniform over the whole range
        assert torch.equal(module.bias, torch.zeros_like(module.bias))
    proj = emb.patch_embeddings.projection
    bound = math.sqrt(6.0 / (proj.weight[0].numel() + proj.weight.shape[0]))  # as a Linear: 3*8*8 -> 32
    assert proj.weight.abs().max().item() <= bound
    assert proj.weight.abs().max().item() > 0.8 * bound
    assert torch.equal(proj.bias, torch.zeros_like(proj.bias))
    for module in vit.modules():
        if isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))


def test_init_mae_style_resets_trained_weights():
    """`init_mae_style` overwrites existing values (e.g. a model that was already initialised or trained)."""
    vit = _vit(seed=2)
    with torch.no_grad():
        for p in vit.parameters():
            p.fill_(3.0)
    vit.apply(init_mae_style)
    assert torch.equal(vit.embeddings.position_embeddings.data, sincos_2d(D, 4))
    assert vit.layers[0].attention.q_proj.weight.abs().max() < 1
    assert torch.equal(vit.layernorm.weight, torch.ones(D))
