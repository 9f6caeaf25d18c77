"""Linear probe on frozen features, as MAE's `main_linprobe.py`: BatchNorm without affine, then a linear layer."""

import math

import torch
from torch import Tensor, nn

from ..training.lars import build_lars
from .knn import topk_accuracy


PROBE_OPTIMIZERS = ("sgd", "lars")


class LinearProbe(nn.Module):
    """`BatchNorm1d(D, affine=False, eps=1e-6)` (a parameter-free feature standardisation) + `Linear(D, C)`.

    The linear weight starts at trunc_normal(std=0.01) and the bias at zero (MAE).
    """

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.norm(features))


def train_linear_probe(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    base_lr: float = 0.1,
    momentum: float = 0.9,
    warmup_epochs: int = 10,
    seed: int = 0,
    optimizer: str = "sgd",
) -> LinearProbe:
    """Trains a `LinearProbe` on cached `(N, D)` features and returns it in eval mode.

    No weight decay, `lr = base_lr * batch_size / 256`, linear warm-up then cosine decay per step.

    Args:
        features: `(N, D)` training features.
        labels: `(N,)` int class ids.
        num_classes: `C`.
        epochs: Passes over the features.
        batch_size: Features per step.
        base_lr: Learning rate per 256 samples.
        momentum: Momentum of either optimiser.
        warmup_epochs: Epochs of linear warm-up.
        seed: Seed of the head initialisation and of the batch order.
        optimizer: `sgd` (SGD with momentum, DINO-style) or `lars` (MAE's `main_linprobe.py`: the repo's `LARS`,
            trust coefficient 1e-3, weight decay 0; the head weight is adapted, its bias takes plain SGD with
            momentum). LARS steps are `lr * 1e-3 * ||W||` in size, so it needs MAE's large-batch learning rate (blr 0.1
            at an effective batch of 16384: lr 6.4); at `lr = 0.1 * 256 / 256` the head barely moves.

    Raises:
        ValueError: For an unknown `optimizer`.
    """
    if optimizer not in PROBE_OPTIMIZERS:
        raise ValueError(f"Unknown linear-probe optimizer '{optimizer}'; choose from {', '.join(PROBE_OPTIMIZERS)}.")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = LinearProbe(features.shape[1], num_classes)
    lr = base_lr * batch_size / 256
    if optimizer == "lars":
        opt = build_lars(probe, lr, weight_decay=0.0, momentum=momentum)
    else:
        opt = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(features) / batch_size)
    total = epochs * steps_per_epoch
    warmup = min(warmup_epochs * steps_per_epoch, total)
    step = 0
    probe.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(features), generator=generator).split(batch_size):
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            if step < warmup:
                scale = (step + 1) / warmup
            else:
                scale = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in opt.param_groups:
                group["lr"] = lr * scale
            loss = nn.functional.cross_entropy(probe(features[batch]), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return probe.eval()


def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    epochs: int = 100,
    batch_size: int = 256,
    base_lr: float = 0.1,
    momentum: float = 0.9,
    warmup_epochs: int = 10,
    seed: int = 0,
    optimizer: str = "sgd",
) -> dict[str, float]:
    """Trains `LinearProbe` on cached features (`train_linear_probe`) and scores it on the test features.

    Features are extracted once, so there is no augmentation during probe training (MAE's probe uses random-resized
    crops + flips).

    Args:
        train_features: `(N, D)`.
        train_labels: `(N,)` int class ids.
        test_features: `(M, D)`.
        test_labels: `(M,)` int class ids.
        epochs: Passes over the training features.
        batch_size: Features per step.
        base_lr: Learning rate per 256 samples (`lr = base_lr * batch_size / 256`; MAE: 0.1 with LARS).
        momentum: Momentum of either optimiser.
        warmup_epochs: Epochs of linear warm-up.
        seed: Seed of the head initialisation and of the batch order.
        optimizer: `sgd` or `lars` (see `train_linear_probe`).

    Returns:
        Top-1 and top-5 accuracy on the test features.

    Raises:
        ValueError: For an unknown `optimizer`.
    """
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = train_linear_probe(
        train_features,
        train_labels,
        num_classes,
        epochs,
        batch_size,
        base_lr,
        momentum,
        warmup_epochs,
        seed,
        optimizer=optimizer,
    )
    with torch.no_grad():
        return topk_accuracy(probe(test_features), test_labels)
