"""Representation diagnostics (`ssl_hf.evaluation.diagnostics`) on collapsed, rank-deficient, isotropic and hand inputs."""

import math

import pytest
import torch

from ssl_hf.evaluation.diagnostics import (
    alignment,
    effective_rank,
    embedding_std,
    singular_values,
    token_cosine_similarity,
    uniformity,
)


def _gaussian(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_effective_rank_of_rank_one_is_one():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(200, 1, generator=gen) @ torch.randn(1, 16, generator=gen)
    assert effective_rank(z) == pytest.approx(1.0, abs=1e-3)


def test_effective_rank_of_isotropic_gaussian_is_about_d():
    d = 32
    assert effective_rank(_gaussian(4096, d)) == pytest.approx(d, rel=0.1)


def test_effective_rank_counts_equal_directions_and_ignores_scale():
    # rows +-e_i for i < 4 in 16 dims: four equal singular values after centring
    basis = torch.eye(16)[:4]
    z = torch.cat([basis, -basis])
    assert effective_rank(z) == pytest.approx(4.0, rel=1e-4)
    g = _gaussian(500, 12, seed=3)
    assert effective_rank(1e3 * g) == pytest.approx(effective_rank(g), rel=1e-4)
    assert effective_rank(1e-3 * g) == pytest.approx(effective_rank(g), rel=1e-4)
    assert effective_rank(torch.ones(10, 4)) == 0.0  # fully collapsed: centred matrix is zero


def test_embedding_std_collapsed_and_spread():
    assert embedding_std(torch.ones(64, 16) * torch.randn(1, 16)) == pytest.approx(0.0, abs=1e-6)
    d = 64
    assert embedding_std(_gaussian(4000, d)) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    # the std is taken after L2 normalisation: row scales do not matter
    z = _gaussian(300, 8)
    scales = torch.rand(300, 1, generator=torch.Generator().manual_seed(1)) + 0.1
    assert embedding_std(z * scales) == pytest.approx(embedding_std(z), rel=1e-5)


def test_alignment_identical_and_antipodal_pairs():
    z = _gaussian(100, 16)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-6)
    assert alignment(z, 5 * z) == pytest.approx(0.0, abs=1e-6)  # normalised first
    assert alignment(z, -z) == pytest.approx(4.0, rel=1e-5)
    assert alignment(z, -z, alpha=1) == pytest.approx(2.0, rel=1e-5)
    # orthogonal unit pairs are sqrt(2) apart
    eye = torch.eye(4)
    assert alignment(eye, eye.roll(1, dims=0)) == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        alignment(z, z[:10])


def test_uniformity_collapsed_and_spread():
    assert uniformity(torch.ones(50, 8) * 3.0) == pytest.approx(0.0, abs=1e-6)
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(antipodal) == pytest.approx(-8.0, rel=1e-5)  # -t * 2^2
    spread = uniformity(_gaussian(1000, 64))
    assert spread < -3.5  # approaches -2t = -4 for uniform points in high dimension
    # a tight cluster is far less uniform
    cluster = torch.tensor([1.0] + [0.0] * 63) + 0.02 * _gaussian(1000, 64, seed=1)
    assert uniformity(cluster) > -0.2
    # t is the temperature of the potential
    assert uniformity(antipodal, t=1) == pytest.approx(-4.0, rel=1e-5)


def test_all_return_python_floats_and_reject_bad_shapes():
    z = _gaussian(20, 4).requires_grad_()
    values = [effective_rank(z), embedding_std(z), alignment(z, z.flip(0)), uniformity(z)]
    assert all(type(v) is float for v in values)
    assert all(math.isfinite(v) for v in values)
    # float64 / float16 inputs are computed in float32 all the same
    assert type(effective_rank(z.detach().double())) is float
    assert type(uniformity(z.detach().half())) is float
    with pytest.raises(ValueError, match=r"\(N, d\) matrix"):
        effective_rank(torch.ones(5))
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(torch.ones(1, 4))


def _brute_token_similarity(tokens):
    """Reference: explicit Gram matrix per image, mean of the off-diagonal, mean over images."""
    u = torch.nn.functional.normalize(tokens.double(), dim=-1)
    gram = u @ u.transpose(1, 2)
    L = tokens.shape[1]
    off = gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)
    return (off / (L * (L - 1))).mean().item()


def test_token_cosine_similarity_identical_tokens_is_one():
    scales = torch.tensor([0.5, 2.0, -30.0]).view(3, 1, 1)  # one scale per image
    tokens = scales * _gaussian(1, 16, seed=2).expand(3, 10, 16)  # every token of an image is the same vector
    assert tokens.shape == (3, 10, 16)
    assert token_cosine_similarity(tokens) == pytest.approx(1.0, abs=1e-6)


def test_token_cosine_similarity_random_high_dimensional_tokens_is_about_zero():
    tokens = torch.randn(8, 64, 512, generator=torch.Generator().manual_seed(0))
    assert token_cosine_similarity(tokens) == pytest.approx(0.0, abs=0.01)


def test_token_cosine_similarity_hand_value_and_bounds():
    # cos pairs: (a, b) = 0, (a, c) = (b, c) = 1/sqrt(2); mean over the 6 ordered pairs = sqrt(2) / 3
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    assert token_cosine_similarity(tokens) == pytest.approx(math.sqrt(2) / 3, rel=1e-6)
    # per image first, then over images: an image of identical tokens (1) and one of orthogonal tokens (0)
    pair = torch.stack([torch.ones(2, 2), torch.eye(2)])
    assert token_cosine_similarity(pair) == pytest.approx(0.5, rel=1e-6)
    # the lower bound -1 / (L - 1) for tokens summing to zero
    assert token_cosine_similarity(torch.tensor([[[1.0, 2.0], [-1.0, -2.0]]])) == pytest.approx(-1.0, rel=1e-6)
    # an all-zero token is similarity 0 to the others (like a zero row of the Gram matrix)
    assert token_cosine_similarity(torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]]])) == pytest.approx(1 / 3)


def test_token_cosine_similarity_matches_the_gram_matrix_and_ignores_scale():
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randn(5, 17, 24, generator=gen) + 0.5  # a shared offset: clearly positive similarity
    expected = _brute_token_similarity(tokens)
    assert expected > 0.1
    assert token_cosine_similarity(tokens) == pytest.approx(expected, rel=1e-5)
    scales = torch.rand(5, 17, 1, generator=gen) * 100 + 1e-3  # every token its own scale
    assert token_cosine_similarity(tokens * scales) == pytest.approx(expected, rel=1e-5)
    assert token_cosine_similarity(tokens.double()) == pytest.approx(expected, rel=1e-5)


def test_token_cosine_similarity_drops_prefix_tokens_and_rejects_bad_shapes():
    gen = torch.Generator().manual_seed(5)
    patches = torch.randn(4, 9, 32, generator=gen)
    cls = 100 * torch.ones(4, 1, 32)  # a very different leading token
    hidden = torch.cat([cls, patches], dim=1)
    assert token_cosine_similarity(hidden, num_prefix_tokens=1) == pytest.approx(
        token_cosine_similarity(patches), rel=1e-6
    )
    assert token_cosine_similarity(hidden) != pytest.approx(token_cosine_similarity(patches), rel=1e-3)
    value = token_cosine_similarity(patches.requires_grad_())
    assert type(value) is float
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        token_cosine_similarity(torch.ones(9, 32))
    with pytest.raises(ValueError, match="two tokens"):
        token_cosine_similarity(hidden[:, :2], num_prefix_tokens=1)
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        token_cosine_similarity(hidden, num_prefix_tokens=-1)


def test_singular_values_are_the_effective_rank_spectrum():
    z = _gaussian(300, 20, seed=6) * torch.linspace(0.1, 3.0, 20)  # anisotropic
    s = singular_values(z)
    assert s.shape == (20,)
    assert s.dtype == torch.float32
    assert torch.all(s[:-1] >= s[1:])  # decreasing
    torch.testing.assert_close(s, torch.linalg.svdvals(z - z.mean(0)))  # centred, not L2-normalised
    p = s.double() / s.double().sum()
    assert effective_rank(z) == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)
    torch.testing.assert_close(singular_values(4 * z), 4 * s, rtol=1e-5, atol=1e-5)
    assert torch.all(singular_values(torch.ones(6, 3)) == 0)  # collapsed: no spectrum (effective rank 0)
    assert singular_values(_gaussian(5, 12)).shape == (5,)  # min(N, d) values
