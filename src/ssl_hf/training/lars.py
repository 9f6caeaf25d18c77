"""LARS: layer-wise adaptive rate scaling (You et al. 2017), the large-batch optimiser of BYOL and SimCLR.

Reference: Y. You, I. Gitman, B. Ginsburg, "Large Batch Training of Convolutional Networks", arXiv:1708.03888
(2017). BYOL (Grill et al. 2020, section 3.3 and appendix C) and SimCLR (Chen et al. 2020) use it with a trust
coefficient of 1e-3 and exclude biases and batch-norm parameters from both weight decay and the adaptation.
"""

from collections.abc import Callable

import torch
from torch import nn

from .param_groups import param_groups


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-parameter step is rescaled by a trust ratio `eta * ||p|| / ||g||`.

    For every parameter `p` with gradient `g`, in a group with `lars_adaptation=True`:

    ```text
    g = g + weight_decay * p
    q = trust_coefficient * ||p|| / (||g|| + eps)    (q = 1 when ||p|| = 0 or ||g|| = 0)
    g = q * g
    ```

    A group with `lars_adaptation=False` skips both lines: no weight decay (whatever its `weight_decay`) and no
    trust ratio, i.e. plain SGD with momentum; BYOL puts biases and normalisation parameters there. Every parameter
    then takes the momentum step (no dampening, no Nesterov):

    ```text
    v = momentum * v + g
    p = p - lr * v
    ```

    The trust ratio makes the step of an adapted tensor `lr * trust_coefficient * ||p||` in size (before momentum),
    whatever the scale of its gradient. The ratio stays on the device (no host synchronisation).

    Args:
        params: Parameters or parameter-group dicts; a group may set `lr`, `momentum`, `weight_decay`,
            `trust_coefficient`, `eps` and `lars_adaptation`.
        lr: Learning rate.
        momentum: Momentum factor; 0 disables the buffer.
        weight_decay: L2 penalty added to the gradient of adapted parameters, before the trust ratio.
        trust_coefficient: `eta` of the trust ratio.
        eps: Added to `||g||` in the trust ratio's denominator.
        lars_adaptation: Default for groups that do not set it.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        lars_adaptation: bool = True,
    ):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if trust_coefficient <= 0.0:
            raise ValueError(f"Invalid trust_coefficient: {trust_coefficient}")
        if eps < 0.0:
            raise ValueError(f"Invalid eps: {eps}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            lars_adaptation=lars_adaptation,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("lars_adaptation", True)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Performs one optimisation step.

        Args:
            closure: Re-evaluates the model and returns the loss (run with gradients enabled).

        Returns:
            The closure's loss, or `None` without a closure.

        Raises:
            RuntimeError: If a parameter has a sparse gradient.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            adapt, weight_decay = group["lars_adaptation"], group["weight_decay"]
            eta, eps = group["trust_coefficient"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients (e.g. nn.Embedding(sparse=True)).")
                if adapt:
                    if weight_decay != 0.0:
                        grad = grad.add(p, alpha=weight_decay)
                    param_norm = torch.linalg.vector_norm(p)
                    grad_norm = torch.linalg.vector_norm(grad)
                    ratio = torch.where(
                        (param_norm > 0) & (grad_norm > 0),
                        eta * param_norm / (grad_norm + eps),
                        torch.ones_like(param_norm),
                    )
                    grad = grad.mul(ratio)
                if momentum != 0.0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(grad)
                    grad = buf
                p.add_(grad, alpha=-lr)
        return loss


def build_lars(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    trust_coefficient: float = 0.001,
    lr_scales: dict[str, float] | None = None,
) -> LARS:
    """LARS over `param_groups(model, weight_decay, lr_scales)`, the no-decay groups not adapted (BYOL's exclusion).

    Weights (>= 2-D) get weight decay and the trust ratio; biases, normalisation parameters, tokens and position
    tables get plain SGD with momentum. Frozen parameters are left out.

    Args:
        model: The module to optimise.
        lr: Learning rate (e.g. `scaled_lr(0.2, batch)` for BYOL).
        weight_decay: Decay of the adapted group (BYOL: 1.5e-6).
        momentum: Momentum factor.
        trust_coefficient: `eta` of the trust ratio.
        lr_scales: Learning-rate factors by parameter-name prefix (see `param_groups`).

    Returns:
        The optimiser; its first group is adapted, its second is not (then the scaled groups, if any).
    """
    groups = param_groups(model, weight_decay, lr_scales)
    for group in groups:
        group["lars_adaptation"] = group["decay"]
    return LARS(groups, lr=lr, momentum=momentum, trust_coefficient=trust_coefficient)
