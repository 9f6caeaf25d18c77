"""Few-shot classification on cached features: n labelled images per class, several seeded draws (DINOv2-style)."""

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .knn import knn_predict, topk_accuracy
from .linear_probe import train_linear_probe


FEWSHOT_CLASSIFIERS = ("linear", "knn")
_PROBE_LR = 0.1  # of the few-shot linear probe, whatever its (small) batch
_PROBE_MIN_STEPS = 300
_PROBE_MIN_EPOCHS = 100


def fewshot_indices(labels: Tensor, shots: int, seed: int | Sequence[int] = 0) -> Tensor:
    """Indices of exactly `shots` samples of every class present in `labels`, drawn at random without replacement.

    Args:
        labels: `(N,)` int class ids.
        shots: Samples per class.
        seed: Seed of the draw: a non-negative int or a tuple of them (`numpy.random.default_rng(seed)`).

    Returns:
        `(shots * C,)` int64 indices into `labels`, grouped by class (ascending class id), `C` being the number of
        distinct labels.

    Raises:
        ValueError: If `shots < 1` or a class has fewer than `shots` samples.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}.")
    labels = labels.reshape(-1).cpu()
    classes, counts = torch.unique(labels, return_counts=True)
    short = [(int(c), int(n)) for c, n in zip(classes, counts) if n < shots]
    if short:
        listed = ", ".join(f"class {c}: {n}" for c, n in short[:5]) + (" ..." if len(short) > 5 else "")
        raise ValueError(f"{shots}-shot needs {shots} training samples per class; too few in {listed}.")
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten().numpy()
        picked.append(members[rng.choice(len(members), shots, replace=False)])
    return torch.from_numpy(np.concatenate(picked)).long()


def _train_and_score(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    classifier: str,
    seed: int,
) -> dict[str, float]:
    """Top-1/top-5 on the test features of one classifier trained on a few-shot training set."""
    n = len(train_features)
    if classifier == "knn":
        scores = knn_predict(train_features, train_labels, test_features, num_classes, k=min(20, n), temperature=0.07)
    else:
        batch = min(256, n)  # full-batch steps for small sets (BatchNorm needs >= 2 samples)
        epochs = max(_PROBE_MIN_EPOCHS, math.ceil(_PROBE_MIN_STEPS / math.ceil(n / batch)))
        probe = train_linear_probe(
            train_features.float(),
            train_labels.long(),
            num_classes,
            epochs=epochs,
            batch_size=batch,
            base_lr=_PROBE_LR * 256 / batch,  # lr = 0.1 at any batch
            warmup_epochs=epochs // 10,
            seed=seed,
        )
        with torch.no_grad():
            scores = probe(test_features.float())
    return topk_accuracy(scores, test_labels)


def fewshot_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    shots: tuple[int, ...] = (1, 5, 10),
    trials: int = 3,
    seed: int = 0,
    classifier: str = "linear",
) -> list[dict]:
    """Few-shot top-1/top-5: for each `n` in `shots`, `trials` draws of `n` training samples per class.

    Every trial draws its training set with `fewshot_indices(train_labels, n, seed=(seed, n, trial))` (seeded per
    trial, so a given `(seed, n, trial)` gives the same draw whatever the other `shots`), trains the classifier on it
    and scores the full test set:

    * `linear`: `train_linear_probe` (MAE's BatchNorm-without-affine + linear head, SGD with momentum, no weight decay)
      with full-batch steps up to 256 samples, `lr = 0.1`, `max(100, ceil(300 / steps per epoch))` epochs (at least
      300 steps, enough to fit a handful of samples) and 10 % warm-up.
    * `knn`: weighted k-NN (`knn_predict`: cosine, `exp(sim / 0.07)` weights) with `k = min(20, n * C)`.

    Args:
        train_features: `(N, D)` cached features of the training split.
        train_labels: `(N,)` int class ids; every class present must have at least `max(shots)` samples.
        test_features: `(M, D)`.
        test_labels: `(M,)` int class ids.
        shots: Samples per class of each setting.
        trials: Draws per setting.
        seed: Base seed of the draws and of the linear heads.
        classifier: `linear` or `knn`.

    Returns:
        One dict per `n`: `shots`, `trials`, `classifier`, `num_train` (`n * C`), `top1_mean`, `top1_std`,
        `top5_mean`, `top5_std` (fractions; sample std over trials, ddof=1, 0 for one trial; the top-5 ones None with
        5 classes or fewer, see `topk_accuracy`) and `per_trial` (`trial`, `top1`, `top5` of each draw).

    Raises:
        ValueError: For an unknown classifier, `trials < 1`, or a class with fewer than `n` training samples.
    """
    if classifier not in FEWSHOT_CLASSIFIERS:
        raise ValueError(f"Unknown few-shot classifier '{classifier}'; choose from {', '.join(FEWSHOT_CLASSIFIERS)}.")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}.")
    train_labels, test_labels = train_labels.reshape(-1).long(), test_labels.reshape(-1).long()
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    for n in shots:  # fail before any training
        fewshot_indices(train_labels, n)
    results = []
    for n in shots:
        per_trial = []
        for trial in range(trials):
            idx = fewshot_indices(train_labels, n, seed=(seed, n, trial))
            metrics = _train_and_score(
                train_features[idx],
                train_labels[idx],
                test_features,
                test_labels,
                num_classes,
                classifier,
                seed + trial,
            )
            per_trial.append({"trial": trial, **metrics})
        top1 = np.array([t["top1"] for t in per_trial])
        top5 = None if per_trial[0]["top5"] is None else np.array([t["top5"] for t in per_trial])  # None: <= 5 classes
        ddof = 1 if trials > 1 else 0
        results.append(
            {
                "shots": n,
                "trials": trials,
                "classifier": classifier,
                "num_train": len(idx),
                "top1_mean": float(top1.mean()),
                "top1_std": float(top1.std(ddof=ddof)),
                "top5_mean": None if top5 is None else float(top5.mean()),
                "top5_std": None if top5 is None else float(top5.std(ddof=ddof)),
                "per_trial": per_trial,
            }
        )
    return results
