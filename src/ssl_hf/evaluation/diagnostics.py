"""Representation diagnostics on `(N, d)` embedding matrices: effective rank, collapse std, alignment, uniformity.

All functions compute in float32 without gradients and return Python floats.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _as_matrix(z: Tensor, name: str = "z", min_rows: int = 1) -> Tensor:
    """`z` detached as a float32 `(N, d)` matrix; raises a `ValueError` on another rank or too few rows."""
    if z.ndim != 2:
        raise ValueError(f"`{name}` must be an (N, d) matrix, got shape {tuple(z.shape)}.")
    if z.shape[0] < min_rows:
        raise ValueError(f"`{name}` needs at least {min_rows} row(s), got {z.shape[0]}.")
    return z.detach().float()


@torch.no_grad()
def effective_rank(z: Tensor) -> float:
    """Effective rank of the centred embedding matrix (Roy & Vetterli 2007).

    With `s` the singular values of `z - z.mean(0)` and `p = s / sum(s)`, it is `exp(-sum_i p_i log p_i)`, the
    exponential of the Shannon entropy of the normalised spectrum. It lies between 1 and `rank(z)`: 1 for a rank-one
    (dimensionally collapsed) matrix, `min(N, d)` for equal singular values, close to `d` for a large isotropic
    sample with `N >> d`. It is invariant to scaling `z`. A fully collapsed `z` (every row equal, so the centred
    matrix is zero) has no spectrum to normalise and gives 0.0.

    Reference: O. Roy, M. Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007.

    Args:
        z: `(N, d)` embeddings.

    Returns:
        The effective rank.
    """
    z = _as_matrix(z)
    singular = torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))
    total = singular.sum()
    if total <= 0:
        return 0.0
    p = singular / total
    entropy = -torch.special.xlogy(p, p).sum()  # xlogy(0, 0) = 0
    return entropy.exp().item()


@torch.no_grad()
def embedding_std(z: Tensor) -> float:
    """Mean over dimensions of the std across samples of the L2-normalised embeddings (SimSiam's collapse check).

    Embeddings spread evenly over the unit sphere (e.g. isotropic Gaussian rows) give about `1 / sqrt(d)`;
    collapsed embeddings (every row the same direction) give 0.

    Reference: X. Chen, K. He, "Exploring Simple Siamese Representation Learning", CVPR 2021, section 4.1.

    Args:
        z: `(N, d)` embeddings, `N >= 2`.

    Returns:
        The mean per-dimension standard deviation (unbiased over samples).
    """
    z = F.normalize(_as_matrix(z, min_rows=2), dim=1)
    return z.std(dim=0).mean().item()


@torch.no_grad()
def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> float:
    """Alignment of positive pairs: mean `||f(x) - f(y)||^alpha` over rows of L2-normalised `z1`, `z2`.

    Lower is better: 0 when each pair maps to the same point, 4 (with `alpha=2`) when every pair is antipodal; a
    collapsed encoder is perfectly aligned, so read it together with `uniformity`.

    Reference: T. Wang, P. Isola, "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere", ICML 2020.

    Args:
        z1: `(N, d)` embeddings of the first views.
        z2: `(N, d)` embeddings of the second views; row `i` pairs with row `i` of `z1`.
        alpha: Exponent of the distance.

    Returns:
        The mean distance to the power `alpha`.
    """
    z1, z2 = _as_matrix(z1, "z1"), _as_matrix(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"`z1` and `z2` must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}.")
    distance = (F.normalize(z1, dim=1) - F.normalize(z2, dim=1)).norm(dim=1)
    return distance.pow(alpha).mean().item()


@torch.no_grad()
def uniformity(z: Tensor, t: float = 2.0) -> float:
    """Uniformity: log of the mean of `exp(-t ||f(x) - f(y)||^2)` over distinct pairs of L2-normalised rows.

    Lower is better. Identical points (collapse) give 0, the maximum; points spread over the sphere give strongly
    negative values, approaching `-2t` (-4 for `t=2`) for uniform points in high dimension, and `-4t` for a single
    antipodal pair. Memory is `N (N - 1) / 2` floats (`torch.pdist`); subsample large sets.

    Reference: T. Wang, P. Isola, "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere", ICML 2020.

    Args:
        z: `(N, d)` embeddings, `N >= 2`.
        t: Temperature of the Gaussian potential.

    Returns:
        The log mean Gaussian potential.
    """
    z = F.normalize(_as_matrix(z, min_rows=2), dim=1)
    log_potential = torch.pdist(z, p=2).pow(2).mul(-t)
    return (torch.logsumexp(log_potential, dim=0) - math.log(log_potential.numel())).item()  # stable log-mean-exp
