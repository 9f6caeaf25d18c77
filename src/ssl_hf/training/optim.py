"""Optimiser construction: parameter groups without decay on 1-D params and tokens, fused AdamW or LARS, lr scaling."""

import torch
from torch import nn

from .lars import build_lars
from .param_groups import param_groups


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The linear scaling rule: `lr = base_lr * global_batch / 256` (MAE, BYOL, DINO)."""
    return base_lr * global_batch / 256


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: torch.device,
    lr_scales: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW with the fused kernel where the device supports it (CPU and CUDA in torch >= 2.4)."""
    groups = param_groups(model, weight_decay, lr_scales)
    fused = device.type in ("cpu", "cuda", "xpu", "mps")
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
    except (RuntimeError, ValueError):  # e.g. a backend without the fused kernel
        return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def build_optimizer(name: str, model: nn.Module, lr: float, args, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser named by `TrainingArguments.optimizer` (`adamw` or `lars`), with the no-decay groups.

    The groups follow the model's learning-rate scales (`SSLPreTrainedModel.lr_scales`), if it has any.
    """
    scales = getattr(model, "lr_scales", dict)()  # a plain nn.Module has none
    if name == "lars":
        return build_lars(
            model,
            lr,
            args.weight_decay,
            momentum=args.momentum,
            trust_coefficient=args.lars_trust_coefficient,
            lr_scales=scales,
        )
    return build_adamw(model, lr, args.weight_decay, (args.adam_beta1, args.adam_beta2), device, scales)


@torch.no_grad()
def clip_grad_norm_per_tensor_(parameters, max_norm: float) -> None:
    """Scales each gradient tensor whose own L2 norm exceeds `max_norm` down to `max_norm` (DINO's `clip_gradients`).

    DINO multiplies by `max_norm / (norm + 1e-6)` when that factor is below 1; so does this.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    factors = [(max_norm / (n + 1e-6)).clamp(max=1.0) for n in norms]
    torch._foreach_mul_(grads, factors)
