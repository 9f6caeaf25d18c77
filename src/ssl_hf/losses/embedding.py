"""Losses on view embeddings: BYOL's regression, MSBReg's multiview centroid, singular-value and Brownian terms.

Shapes: `P` `(K, B, d)` online predictions (or projections) of K views of B images, `Z` `(K, B, d)` target
projections. Every function normalises what it needs and computes in float32.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def byol_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, reduction: Literal["mean", "sum"] = "mean") -> Tensor:
    """BYOL: each view's prediction regresses the other view's target, `||p̄ - z̄'||² = 2 - 2 cos(p, z')`.

    Args:
        p1: `(B, d)` online prediction of view 1.
        p2: `(B, d)` online prediction of view 2.
        z1: `(B, d)` target projection of view 1 (detached here).
        z2: `(B, d)` target projection of view 2 (detached here).
        reduction: `"mean"` of the two directions (default) or their `"sum"` (the reference's scale, 2x).
    """
    d12 = 2 - 2 * F.cosine_similarity(p1.float(), z2.detach().float(), dim=-1)
    d21 = 2 - 2 * F.cosine_similarity(p2.float(), z1.detach().float(), dim=-1)
    total = (d12 + d21).mean()
    return total if reduction == "sum" else total / 2


def multiview_centroid_loss(
    P: Tensor, Z: Tensor, mode: Literal["leave_one_out", "all_views", "centroid_to_centroid"] = "leave_one_out"
) -> Tensor:
    """MSBReg's attraction: pull each view's prediction to the centroid of the target embeddings of the image.

    `leave_one_out` (default) uses the centroid of the *other* views' targets, renormalised; with K = 2 this is
    exactly `byol_loss(..., reduction="mean")`. `all_views` includes the view's own target. `centroid_to_centroid`
    compares the normalised centroid of the predictions with that of the targets.
    """
    P, Z = F.normalize(P.float(), dim=-1), F.normalize(Z.detach().float(), dim=-1)
    K = P.shape[0]
    if mode == "centroid_to_centroid":
        return (2 - 2 * (F.normalize(P.mean(0), dim=-1) * F.normalize(Z.mean(0), dim=-1)).sum(-1)).mean()
    if mode == "leave_one_out":
        if K < 2:
            raise ValueError("the leave-one-out centroid needs at least 2 views")
        centroid = (Z.sum(0, keepdim=True) - Z) / (K - 1)
    elif mode == "all_views":
        centroid = Z.mean(0, keepdim=True).expand_as(Z)
    else:
        raise ValueError(f"centroid_mode must be leave_one_out, all_views or centroid_to_centroid, got '{mode}'")
    return (2 - 2 * (P * F.normalize(centroid, dim=-1)).sum(-1)).mean()


def singular_value_loss(P: Tensor, kind: Literal["nuclear", "log", "whitening"] = "nuclear") -> Tensor:
    """MSBReg's global dispersion on each view's `(B, d)` matrix of unit-norm embeddings, averaged over views.

    `nuclear`: minus the sum of singular values (the Frobenius norm is fixed, so this equalises them);
    `log`: minus the sum of `log(sigma + 1e-4)`; `whitening`: `||Cov - I/d||_F^2` of the embeddings (BMWReg). Computed
    in float32 outside autocast; `torch.linalg.svdvals` keeps gradients finite for repeated (collapsed) values.
    """
    with torch.autocast(P.device.type, enabled=False):
        P = F.normalize(P.float(), dim=-1)
        if kind == "whitening":
            centred = P - P.mean(1, keepdim=True)
            cov = centred.transpose(1, 2) @ centred / max(P.shape[1] - 1, 1)  # (K, d, d)
            eye = torch.eye(P.shape[-1], device=P.device) / P.shape[-1]
            return (cov - eye).pow(2).sum((1, 2)).mean()
        sigma = torch.linalg.svdvals(P)  # (K, min(B, d))
        if kind == "nuclear":
            return -sigma.sum(-1).mean()
        if kind == "log":
            return -(sigma + 1e-4).log().sum(-1).mean()
    raise ValueError(f"sv_loss_type must be nuclear, log or whitening, got '{kind}'")


def brownian_loss(
    P: Tensor,
    noise: Literal["per_sample", "per_image", "per_batch"] = "per_sample",
    unit: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MSBReg's local dispersion: `<p̄, eps>` with a fresh random direction per particle and step.

    Its gradient is a random kick that needs no other particle's position. `noise` draws one direction per
    (view, image), per image (shared by its views) or one for the whole batch; `unit` normalises the Gaussian draws.
    The draws come from `generator` or the global torch RNG (the training loop reseeds it per step).
    """
    P = F.normalize(P.float(), dim=-1)
    K, B, d = P.shape
    shape = {"per_sample": (K, B, d), "per_image": (1, B, d), "per_batch": (1, 1, d)}.get(noise)
    if shape is None:
        raise ValueError(f"brownian_noise must be per_sample, per_image or per_batch, got '{noise}'")
    eps = torch.randn(shape, device=P.device, generator=generator)
    if unit:
        eps = F.normalize(eps, dim=-1)
    return (P * eps).sum(-1).mean()
