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


def representation_diagnostics(
    model_path: str,
    dataset: str = "digits",
    *,
    split: str = "test",
    num_images: int = 1024,
    image_column: str | None = None,
    pool: str = "cls",
    random_init: bool = False,
    seed: int = 0,
) -> dict:
    """Geometry of an exported backbone's features on `num_images` images of a split.

    Alignment (Wang & Isola 2020: mean squared distance of the normalised features of two augmented views of the same
    image, SimCLR-style views with every colour op) and uniformity (log of the mean Gaussian potential, t = 2) as in
    MSBReg's Tab. 3, plus the effective rank and the per-dimension std of the normalised features of the plain
    (evaluation-view) images. Lower alignment is better; lower (more negative) uniformity means a wider spread.
    """
    import numpy as np
    import torch

    from ..data.color import MultiView
    from .diagnostics import alignment, effective_rank, embedding_std, uniformity
    from .features import pooled_features

    model, view = load_backbone(model_path, random_init=random_init, seed=seed)
    source = load_image_source(dataset, split, image_column=image_column)
    count = min(num_images, len(source.dataset))
    images, _ = source.read(slice(0, count), [])
    images = [im for im in images if im is not None]
    rngs = [np.random.default_rng((seed, 7919, i)) for i in range(len(images))]
    pairs = MultiView(view.image_size, 2, mean=view.mean, std=view.std)(images, rngs)["pixel_values"]
    chunks = range(0, len(images), 256)

    def embed(batches) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([pooled_features(model, pixels, pool) for pixels in batches])

    plain = embed(view(images[i : i + 256])["pixel_values"] for i in chunks)
    first, second = (embed(pairs[i : i + 256, k] for i in chunks) for k in (0, 1))
    return {
        "dataset": dataset,
        "split": split,
        "num_images": len(images),
        "backbone": "random-init" if random_init else "pretrained",
        "alignment": alignment(first, second),
        "uniformity": uniformity(plain),
        "effective_rank": effective_rank(plain),
        "embedding_std": embedding_std(plain),
    }
