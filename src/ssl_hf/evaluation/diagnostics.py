"""Representation diagnostics: effective rank and spectrum, collapse std, alignment, uniformity, token similarity.

All functions take `(N, d)` embedding matrices (`token_cosine_similarity`: `(B, L, D)` tokens), compute in float32
without gradients and return Python floats (`singular_values`: a tensor).
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
    return _spectrum_effective_rank(singular_values(z))


@torch.no_grad()
def singular_values(z: Tensor) -> Tensor:
    """Singular values of the centred embedding matrix `z - z.mean(0)`, in decreasing order.

    This is the spectrum of `effective_rank` (which calls this function) and of
    `ssl_hf.evaluation.plots.plot_spectrum`. The rows are centred but not L2-normalised, as in `effective_rank`. A
    fully collapsed `z` gives all zeros.

    Args:
        z: `(N, d)` embeddings.

    Returns:
        `(min(N, d),)` float32 singular values on the device of `z`.
    """
    z = _as_matrix(z)
    return torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))


def _spectrum_effective_rank(singular: Tensor) -> float:
    """`exp` of the Shannon entropy of `singular / singular.sum()`; 0.0 for an all-zero spectrum."""
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


@torch.no_grad()
def token_cosine_similarity(tokens: Tensor, num_prefix_tokens: int = 0) -> float:
    """Mean pairwise cosine similarity between the tokens of the same image, averaged over images.

    For image `b` with L2-normalised tokens `u_1 .. u_L`, the score is the mean of `cos(u_i, u_j)` over the
    `L (L - 1)` ordered pairs `i != j` (the off-diagonal of the `L x L` Gram matrix); the result is the mean over
    images. 1 when all tokens of an image point the same way (homogeneous tokens), about 0 for unrelated tokens in
    high dimension, and at least `-1 / (L - 1)`. It is invariant to the scale of each token. The off-diagonal sum is
    computed as `||sum_i u_i||^2 - sum_i ||u_i||^2` (Gram sum minus its diagonal) without building the Gram matrix,
    so memory stays `O(B L D)`; an all-zero token counts as similarity 0 to every other token.

    This is the measure behind ASL's Fig. 1 ("representational similarity among tokens", ViT-B models), which shows
    that hybrid CL + MIM methods (ccMIM and SIM over MAE, iBOT over DINO) make the tokens of an image more similar,
    i.e. more homogeneous, than their baselines. The paper gives no formula, layer or cls rule; the choices here
    are ours: cosine similarity, the last layer's output after the final norm (the tokens the probes read, as
    returned by `ssl_hf.evaluation.features.patch_tokens`), and patch tokens only, since the cls token is an
    image-level summary and ASL's argument is about patches (ASL never aligns the cls token either).

    Reference: Z. Li et al., "Self-Supervised Representation Learning from Arbitrary Scenarios", CVPR 2024, Fig. 1.

    Args:
        tokens: `(B, L, D)` tokens of `B` images, e.g. `patch_tokens(model, pixel_values)` (cls and register tokens
            already dropped) or a `last_hidden_state`.
        num_prefix_tokens: Leading tokens of each image to leave out (1 for the cls token of a ViT
            `last_hidden_state`, plus the register tokens of a DINOv2 with registers; 0 for `patch_tokens` output).

    Returns:
        The mean pairwise token cosine similarity.

    Raises:
        ValueError: Unless `tokens` is 3-D with at least two tokens per image after the prefix is dropped.
    """
    if tokens.ndim != 3:
        raise ValueError(f"`tokens` must be a (B, L, D) tensor, got shape {tuple(tokens.shape)}.")
    if num_prefix_tokens < 0:
        raise ValueError(f"`num_prefix_tokens` must be >= 0, got {num_prefix_tokens}.")
    u = F.normalize(tokens.detach()[:, num_prefix_tokens:].float(), dim=-1)
    B, L, D = u.shape
    if B == 0 or L < 2:
        raise ValueError(f"Need at least one image with two tokens, got {B} image(s) with {L} token(s) each.")
    gram_sum = u.sum(dim=1, dtype=torch.float64).square().sum(dim=1)  # (B,): sum over all i, j of <u_i, u_j>
    diagonal = u.square().sum(dim=(1, 2), dtype=torch.float64)  # (B,): sum over i of ||u_i||^2 (1, or 0 for zeros)
    per_image = (gram_sum - diagonal) / (L * (L - 1))
    return per_image.mean().item()
