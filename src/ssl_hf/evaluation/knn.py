"""Weighted k-NN classification on frozen features, as DINO's `eval_knn.py` (cosine, k=20, T=0.07)."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .metric_loading import load_metric


TOP5_MIN_CLASSES = 5  # top-5 needs more classes than this: with 5 or fewer it is 100 % whatever the scores


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of each test sample from its `k` most cosine-similar training samples, weighted `exp(sim / T)`.

    Args:
        train_features: `(N, D)`.
        train_labels: `(N,)` int class ids.
        test_features: `(M, D)`.
        num_classes: `C`.
        k: Neighbours.
        temperature: `T` of the weights.
        chunk_size: Test samples per similarity block (bounds memory).

    Returns:
        `(M, C)` scores.
    """
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k = min(k, train.shape[0])
    scores = []
    for chunk in test.split(chunk_size):
        sims, idx = (chunk @ train.T).topk(k, dim=1)  # (m, k)
        weights = (sims / temperature).exp()
        one_hot = F.one_hot(train_labels[idx].long(), num_classes).float()  # (m, k, C)
        scores.append((one_hot * weights.unsqueeze(-1)).sum(1))
    return torch.cat(scores)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of `knn_predict`."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return topk_accuracy(scores, test_labels)


def topk_accuracy(scores: Tensor, labels: Tensor) -> dict[str, float | None]:
    """Top-1 and top-5 accuracy of `(M, C)` class scores against `(M,)` labels; top-5 is None when `C <= 5`.

    With 5 classes or fewer every label is among the top 5, so top-5 would always read 100 %: it is not applicable
    (None in the results, "n/a" in cards).

    The ranked top-5 class ids go through the shipped `evaluate` metric `topk_accuracy` (`load_metric`, offline).
    Its exact fractions are rounded to float32, the values this function returned when it averaged in float32
    tensors (bit-identical: float64 has more than twice float32's precision, so the double rounding is innocuous).
    """
    top = scores.detach().topk(min(5, scores.shape[1]), dim=1).indices
    metrics = load_metric("topk_accuracy").compute(
        predictions=top.cpu().numpy(), references=labels.detach().reshape(-1).cpu().numpy()
    )
    top5 = float(np.float32(metrics["top5"])) if scores.shape[1] > TOP5_MIN_CLASSES else None
    return {"top1": float(np.float32(metrics["top1"])), "top5": top5}
