"""Evaluation of exported backbones (D7): consumes only what plain transformers loads."""

import time

import datasets
import pyarrow.compute as pc

from ..data.datasets import load_image_source
from .features import extract_features, load_backbone
from .knn import knn_accuracy, knn_predict


def evaluate_knn(
    model_path: str,
    dataset: str = "digits",
    *,
    train_split: str = "train",
    test_split: str = "test",
    label_column: str = "label",
    image_column: str | None = None,
    k: int = 20,
    temperature: float = 0.07,
    pool: str = "cls",
    batch_size: int = 256,
    random_init: bool = False,
    seed: int = 0,
) -> dict:
    """Weighted k-NN top-1/top-5 of an exported backbone's features (DINO protocol) on a labelled dataset.

    Returns:
        A JSON-ready dict: protocol, dataset, settings, `top1`, `top5`, sample counts and timing.
    """
    start = time.perf_counter()
    model, view = load_backbone(model_path, random_init=random_init, seed=seed)
    kwargs = {"image_column": image_column}  # built-in sets at native size; the eval view resizes
    train = load_image_source(dataset, train_split, **kwargs)
    test = load_image_source(dataset, test_split, **kwargs)
    for source, split in ((train, train_split), (test, test_split)):
        _check_labels(source.dataset, label_column, f"Split '{split}' of {dataset}")
    train_f, train_y = extract_features(model, train, view, label_column, pool, batch_size, desc="train features")
    test_f, test_y = extract_features(model, test, view, label_column, pool, batch_size, desc="test features")
    metrics = knn_accuracy(train_f, train_y, test_f, test_y, k, temperature)
    return {
        "protocol": "knn",
        "backbone": "random_init" if random_init else "pretrained",
        "model": str(model_path),
        "dataset": dataset,
        "split": test_split,
        "settings": f"k={k}, T={temperature}, {pool} features",
        "k": k,
        "temperature": temperature,
        "pool": pool,
        **metrics,
        "num_train": len(train_y),
        "num_test": len(test_y),
        "seconds": round(time.perf_counter() - start, 1),
    }


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
