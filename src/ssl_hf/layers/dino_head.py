"""DINO's projection head (also SelfPatch's image and patch heads)."""

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ZeroGradient(torch.autograd.Function):
    """Identity forward, zero gradient backward.

    Stops learning while keeping the tensor in the graph (DDP expects every trainable parameter to get a gradient).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation: `W = g * V / ||V||` per output row (Salimans & Kingma 2016).

    As `nn.utils.weight_norm(nn.Linear(..., bias=False))` with the gain `g` initialised to 1; DINO freezes `g`
    (`norm_last_layer=True`), which makes the layer a cosine-similarity classifier over `out_dim` prototypes.
    """

    def __init__(self, in_dim: int, out_dim: int, train_gain: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.gain = nn.Parameter(torch.ones(out_dim, 1), requires_grad=train_gain)
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        weight, gain = self.weight, self.gain
        if frozen:  # zero gradients: AdamW then leaves the layer's function unchanged (weight decay only rescales V)
            weight = _ZeroGradient.apply(weight)
            gain = _ZeroGradient.apply(gain) if gain.requires_grad else gain
        return F.linear(x, gain * F.normalize(weight, dim=1))


class DINOHead(nn.Module):
    """DINO's projection head.

    MLP (Linear -> [BN] -> GELU, `num_layers - 1` times, to a `bottleneck_dim` output) -> L2-normalise ->
    weight-normalised `Linear(bottleneck_dim, out_dim)` without bias.

    Args:
        in_dim: Input width (the backbone's hidden size).
        out_dim: Number of prototypes `K` (DINO: 65536).
        hidden_dim: MLP width (2048).
        bottleneck_dim: Width before the last layer (256).
        num_layers: Linear layers before the last one (3).
        use_bn: BatchNorm after each hidden linear (DINO's `use_bn_in_head`, default False).
        norm_last_layer: Freeze the weight-norm gain at 1 (DINO's default).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(b), nn.GELU()] if use_bn else [nn.GELU()]
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, train_gain=not norm_last_layer)

    @classmethod
    def from_config(cls, config, in_dim: int, out_dim: int) -> "DINOHead":
        """The head described by a `SelfDistillationConfig`'s `head_*`, `use_bn_in_head` and `norm_last_layer`."""
        return cls(
            in_dim,
            out_dim,
            hidden_dim=config.head_hidden_dim,
            bottleneck_dim=config.head_bottleneck_dim,
            num_layers=config.head_num_layers,
            use_bn=config.use_bn_in_head,
            norm_last_layer=config.norm_last_layer,
        )

    def forward(self, x: Tensor, freeze_last_layer: bool = False) -> Tensor:
        """`(..., in_dim)` -> `(..., out_dim)` logits.

        Args:
            x: Input features.
            freeze_last_layer: Give the last layer zero gradients (DINO freezes it during the first epoch and drops
                its gradients). With zero gradients AdamW's moments stay zero, so the update is zero; weight decay
                only rescales `V`, which the weight normalisation cancels.
        """
        shape = x.shape[:-1]
        h = self.mlp(x.reshape(-1, x.shape[-1]))  # BatchNorm1d needs (N, C)
        h = F.normalize(h, dim=-1, eps=1e-6 if h.dtype == torch.float16 else 1e-12)
        return self.last_layer(h, frozen=freeze_last_layer).reshape(*shape, -1)
