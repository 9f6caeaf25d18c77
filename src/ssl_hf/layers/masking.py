"""Random token masking driven by an explicit `noise` tensor (deterministic when noise is given)."""

from typing import NamedTuple

import torch
from torch import Tensor


class MaskSample(NamedTuple):
    """One draw of a random mask.

    Attributes:
        keep_indices: `(B, L_keep)` indices of the visible patches, in shuffle order.
        restore_indices: `(B, L)` permutation that puts shuffled tokens back in image order.
        mask: `(B, L)` bool, True = hidden.
    """

    keep_indices: Tensor
    restore_indices: Tensor
    mask: Tensor


def random_masking(noise: Tensor, num_keep: int) -> MaskSample:
    """Keeps the `num_keep` patches with the lowest noise (lower noise -> kept), as MAE.

    Args:
        noise: `(B, L)` one score per patch.
        num_keep: Number of visible patches per sample.
    """
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    mask = torch.ones_like(noise, dtype=torch.bool)
    mask[:, :num_keep] = False
    return MaskSample(shuffle[:, :num_keep], restore, torch.gather(mask, 1, restore))


def gather_tokens(tokens: Tensor, indices: Tensor) -> Tensor:
    """Selects tokens per sample.

    Args:
        tokens: `(B, L, D)`.
        indices: `(B, K)` positions to take.

    Returns:
        `(B, K, D)`.
    """
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
