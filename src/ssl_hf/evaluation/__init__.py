"""Evaluation of exported backbones (D7): consumes only what plain transformers loads."""

import time

import datasets
import pyarrow.compute as pc

from ..data.datasets import load_image_source
from .features import extract_features, load_backbone
from .knn import knn_accuracy, knn_predict
from .linear_probe import LinearProbe, linear_probe_accuracy


PROTOCOLS = ("knn", "linear")


def evaluate_backbone(
    model_path: str,
    dataset: str = "digits",
    *,
    protocols: tuple[str, ...] = ("knn",),
    train_split: str = "train",
    test_split: str = "test",
    label_column: str = "label",
    image_column: str | None = None,
    k: int = 20,
    temperature: float = 0.07,
    probe_epochs: int = 100,
    pool: str = "cls",
    batch_size: int = 256,
    random_init: bool = False,
    seed: int = 0,
) -> list[dict]:
    """Evaluates an exported backbone's frozen features on a labelled dataset; one feature pass serves every protocol.

    Protocols: `knn` (weighted k-NN, DINO: cosine, k=20, T=0.07) and `linear` (MAE-style linear probe: BatchNorm
    without affine + linear, SGD on cached features).

    Returns:
        One JSON-ready dict per protocol: protocol, dataset, settings, `top1`, `top5`, sample counts and timing.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"Unknown protocol(s) {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}.")
    start = time.perf_counter()
    model, view = load_backbone(model_path, random_init=random_init, seed=seed)
    kwargs = {"image_column": image_column}  # built-in sets at native size; the eval view resizes
    train = load_image_source(dataset, train_split, **kwargs)
    test = load_image_source(dataset, test_split, **kwargs)
    for source, split in ((train, train_split), (test, test_split)):
        _check_labels(source.dataset, label_column, f"Split '{split}' of {dataset}")
    train_f, train_y = extract_features(model, train, view, label_column, pool, batch_size, desc="train features")
    test_f, test_y = extract_features(model, test, view, label_column, pool, batch_size, desc="test features")
    common = {
        "backbone": "random_init" if random_init else "pretrained",
        "model": str(model_path),
        "dataset": dataset,
        "split": test_split,
        "pool": pool,
        "num_train": len(train_y),
        "num_test": len(test_y),
        "feature_seconds": round(time.perf_counter() - start, 1),
    }
    results = []
    for protocol in protocols:
        if protocol == "knn":
            metrics = knn_accuracy(train_f, train_y, test_f, test_y, k, temperature)
            settings = {"settings": f"k={k}, T={temperature}, {pool} features", "k": k, "temperature": temperature}
        else:
            metrics = linear_probe_accuracy(train_f, train_y, test_f, test_y, epochs=probe_epochs, seed=seed)
            settings = {"settings": f"BN+linear, SGD {probe_epochs} ep, {pool} features", "epochs": probe_epochs}
        results.append({"protocol": protocol, **common, **settings, **metrics})
    return results


def evaluate_knn(model_path: str, dataset: str = "digits", **kwargs) -> dict:
    """Weighted k-NN top-1/top-5 (DINO protocol); see `evaluate_backbone` for the arguments."""
    return evaluate_backbone(model_path, dataset, protocols=("knn",), **kwargs)[0]


def _check_labels(ds: datasets.Dataset, label_column: str, where: str) -> None:
    """Raises a `ValueError` naming `--label_column` unless the column holds one class id >= 0 per image."""
    if label_column not in ds.column_names:
        raise ValueError(
            f"{where} has no label column '{label_column}' (columns: {ds.column_names}). Name it with --label_column."
        )
    feature = ds.features[label_column]
    integer = isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
    )
    column = ds.data.column(label_column)
    # e.g. an imagefolder without class sub-folders gets a ClassLabel column of nulls; unlabelled splits use -1
    missing = integer and (column.null_count > 0 or (len(column) > 0 and pc.min(column).as_py() < 0))
    if not integer or missing:
        problem = "missing (null or -1) labels" if integer else f"values of type {feature}"
        raise ValueError(
            f"{where}: column '{label_column}' must hold one integer class id per image, found {problem}. "
            "Name the class column with --label_column."
        )
