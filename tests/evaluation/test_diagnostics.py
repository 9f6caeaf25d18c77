"""Representation diagnostics (`ssl_hf.evaluation.diagnostics`) on collapsed, rank-deficient and isotropic inputs."""

import math

import pytest
import torch

from ssl_hf.evaluation.diagnostics import alignment, effective_rank, embedding_std, uniformity


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
