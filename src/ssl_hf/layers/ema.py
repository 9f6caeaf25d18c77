"""Exponential moving average of a network (BYOL's target, DINO's and SelfPatch's teacher)."""

import math
from collections.abc import Iterable

import torch
from torch import Tensor


def cosine_momentum(step: int, max_steps: int, base: float) -> float:
    """Teacher momentum after `step` of `max_steps` steps: `1 - (1 - base) (cos(pi step / max_steps) + 1) / 2`.

    BYOL's schedule, also DINO's `cosine_scheduler(base, 1)` per iteration: `base` at step 0, 1 at the end.
    """
    return 1 - (1 - base) * (math.cos(math.pi * min(step, max_steps) / max(max_steps, 1)) + 1) / 2


@torch.no_grad()
def ema_update_(target: Iterable[Tensor], online: Iterable[Tensor], momentum: float) -> None:
    """`target <- momentum * target + (1 - momentum) * online`, in place, one fused call for all tensors."""
    target = list(target)
    online = [p.detach().to(t.dtype) for p, t in zip(online, target, strict=True)]
    torch._foreach_lerp_(target, online, 1 - momentum)
