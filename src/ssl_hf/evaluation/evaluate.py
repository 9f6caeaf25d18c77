"""`evaluate_backbone`: every evaluation protocol of an exported backbone, behind one call."""

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets
import pyarrow.compute as pc
import torch
from transformers import PreTrainedModel

from ..data.datasets import ImageSource, load_image_source
from ..data.views import EvalView
from ..published import published_name
from .cache import FeatureCache, default_cache_dir, model_fingerprint, source_key, view_key
from .dense import backbone_patch_size, check_dense_backbone, check_segmentation, dense_probe, segmentation_maps
from .features import applied_pool, extract_features, extract_patch_features, load_backbone, load_random_init
from .fewshot import fewshot_accuracy
from .finetune import finetune_accuracy
from .floor import calibrate_twin
from .knn import knn_accuracy
from .linear_probe import linear_probe_accuracy
from .representation import feature_diagnostics
from .splits import held_out_name, labelled_splits


logger = logging.getLogger(__name__)
PROTOCOLS = ("knn", "linear", "fewshot", "finetune", "dense", "diagnostics")
PROBE_BASE_LR = {"sgd": 0.1, "lars": 6.4}  # per 256 images
FEATURE_PROTOCOLS = ("knn", "linear", "fewshot")  # served by one pass of pooled features


@dataclass
class _Run:
    """What the protocols of one `evaluate_backbone` call share: its settings, the backbone and the feature cache."""

    model_path: str
    dataset: str
    train_split: str
    test_split: str
    label_column: str
    image_column: str | None
    pool: str
    batch_size: int
    random_init: bool
    seed: int
    store: FeatureCache
    test_fraction: float | None = None  # the test set is this fraction of the train split (`splits.labelled_splits`)
    # set by `_load`
    model: PreTrainedModel = field(init=False)
    view: EvalView = field(init=False)
    # random init: what the floor is (`floor`, `floor_init`, `bn_calibration_images`); else empty
    floor: dict = field(init=False, default_factory=dict)
    identity: dict = field(init=False, default_factory=dict)  # the cache's key of the weights and the view

    def row(self, protocol: str, dataset: str) -> dict:
        """The fields every result row starts with."""
        return {
            "protocol": protocol,
            "backbone": "random_init" if self.random_init else "pretrained",
            **self.floor,
            "model": str(self.model_path),
            "dataset": dataset,
            "split": (
                held_out_name(self.train_split, self.test_fraction, self.seed)
                if self.test_fraction is not None and dataset == self.dataset
                else self.test_split
            ),
        }


@dataclass
class _Features:
    """Pooled image features and labels of both splits (one cached pass), and how long the pass took."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    seconds: float

    def splits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.train, self.train_labels, self.test, self.test_labels


def evaluate_backbone(
    model_path: str,
    dataset: str = "digits",
    *,
    protocols: tuple[str, ...] = ("knn",),
    train_split: str = "train",
    test_split: str = "test",
    label_column: str = "label",
    image_column: str | None = None,
    test_fraction: float | None = None,
    k: int = 20,
    temperature: float = 0.07,
    probe_epochs: int = 100,
    probe_optimizer: str = "sgd",
    pool: str = "cls",
    batch_size: int = 256,
    random_init: bool = False,
    seed: int = 0,
    bn_calibration_images: int | None = 2048,
    dense_dataset: str = "digit-scenes",
    dense_epochs: int = 10,
    max_train_images: int | None = 2000,
    max_test_images: int | None = 1000,
    shots: tuple[int, ...] = (1, 5, 10),
    fewshot_trials: int = 3,
    finetune_epochs: int = 3,
    finetune_max_train_images: int | None = 2000,
    layer_decay: float = 0.75,
    diagnostics_images: int = 1024,
    plots_dir: str | os.PathLike | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Evaluates an exported backbone; one (cached) feature pass serves every frozen-feature protocol.

    Protocols on images of `dataset`: `knn` (weighted k-NN, DINO: cosine, k=20, T=0.07), `linear` (MAE-style linear
    probe: BatchNorm without affine + linear, SGD on cached features), `fewshot` (the linear probe on `n` labelled
    images per class, `fewshot_trials` draws), `finetune` (full fine-tuning with layer-wise lr decay,
    `finetune_accuracy`) and `diagnostics` (`feature_diagnostics`: alignment, uniformity, effective rank, token cosine
    similarity, plots). `dense` (`dense_probe`) classifies every patch token of `dense_dataset` with a linear head and
    scores it as semantic segmentation (mean IoU, pixel and patch accuracy).

    Args:
        model_path: Export folder or Hub id.
        dataset: Labelled dataset of `knn` and `linear`.
        protocols: Any of `PROTOCOLS`.
        train_split: Training split (of `dataset` and `dense_dataset`).
        test_split: Test split (of `dataset` and `dense_dataset`).
        label_column: Class column of `dataset`: integer ids, or class names (encoded with one sorted mapping).
        image_column: Image column (of `dataset` and `dense_dataset`); found automatically when None.
        test_fraction: Test on this fraction of `dataset`'s train split, held out by a shuffle seeded by `seed`, and
            train on the rest (for datasets without a test split); `test_split` is then unused for `dataset`.
        k: Neighbours of `knn`.
        temperature: Temperature of `knn`.
        probe_epochs: Epochs of `linear`.
        probe_optimizer: `sgd` (momentum 0.9, base lr 0.1) or `lars` (MAE's linear probe: its absolute lr 0.1 x
            16384 / 256 = 6.4 at batch 256, since LARS moves each layer by lr x 1e-3 of its norm per step).
        pool: `cls` or `mean` image features (models without a cls token always average, and their rows say
            `mean`: `applied_pool`).
        batch_size: Images per forward pass.
        random_init: Evaluate the floor instead: the same architecture with the weights it had before training
            (`load_random_init`: the method's own init when the export records its run, else transformers' init),
            its BatchNorm statistics estimated on `bn_calibration_images` training images (`calibrate_batchnorm`).
            Pretrained backbones keep their own statistics.
        seed: Seed of the transformers init of `random_init`, of the BatchNorm images and of the probes.
        bn_calibration_images: `random_init`: training images (of `dataset`'s train split) drawn to estimate the
            twin's BatchNorm statistics (None: the whole split); unused without BatchNorm layers.
        dense_dataset: Dataset of `dense`, with a `segmentation` column of square per-pixel class maps (flattened
            `H*W` integers, resized to the evaluation view by nearest neighbour when their size differs).
        dense_epochs: Epochs of the `dense` patch probe.
        max_train_images: `dense` only: train on the first `max_train_images` images of the train split (None: all).
        max_test_images: `dense` only: score the first `max_test_images` images of the test split (None: all).
        shots: `fewshot`: labelled images per class of each setting.
        fewshot_trials: `fewshot`: random draws per setting (mean and std reported).
        finetune_epochs: `finetune`: epochs of full fine-tuning (`finetune_accuracy`).
        finetune_max_train_images: `finetune`: train on this many training images drawn at random (None: all).
        layer_decay: `finetune`: layer-wise learning-rate decay.
        diagnostics_images: `diagnostics`: test images used.
        plots_dir: `diagnostics`: write the spectrum and projection PNGs here (None: no plots), named
            `<backbone>_<dataset>_spectrum.png` and `..._pca.png`.
        cache: Keep extracted features on disk (safetensors, keyed by the weights' files, the dataset's fingerprint,
            the split, the view and the pooling) and reuse them in later calls.
        cache_dir: Cache folder (default `$SSL_HF_CACHE/features`, i.e. `~/.cache/ssl_hf/features`).

    Returns:
        JSON-ready dicts in the order of `protocols` (one per few-shot setting): protocol, `backbone` (`pretrained` or
        `random_init`), dataset, settings, sample counts and timing; for `random_init` also `floor` (what the twin is,
        e.g. "MAE init at step 0, seed 0"), `floor_init` (`method` or `config`) and `bn_calibration_images` (0
        without BatchNorm); plus `top1` and `top5` (`knn`, `linear`, `finetune`), `top1_mean`/`top1_std`/... (`fewshot`),
        `mean_iou`, `pixel_accuracy`, `patch_accuracy` and `per_class_iou` (`dense`, percent) or the geometry
        (`diagnostics`).

    Raises:
        ValueError: For an unknown protocol, unusable labels, or (`dense`) a CNN backbone or a dataset without a
            `segmentation` column.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"Unknown protocol(s) {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}.")
    start = time.perf_counter()
    run = _Run(
        model_path=model_path,
        dataset=dataset,
        train_split=train_split,
        test_split=test_split,
        label_column=label_column,
        image_column=image_column,
        pool=pool,
        batch_size=batch_size,
        random_init=random_init,
        seed=seed,
        store=FeatureCache((cache_dir or default_cache_dir()) if cache else None),
        test_fraction=test_fraction,
    )
    train, test, dense_sources = _load(run, protocols, dense_dataset, bn_calibration_images)
    results = {}
    feature_protocols = [p for p in protocols if p in FEATURE_PROTOCOLS]
    if feature_protocols:
        features = _pooled_features(run, train, test, start)
        for protocol in feature_protocols:
            if protocol == "knn":
                results["knn"] = _knn(run, features, k, temperature)
            elif protocol == "linear":
                results["linear"] = _linear(run, features, probe_epochs, probe_optimizer)
            else:
                results["fewshot"] = _fewshot(run, features, shots, fewshot_trials)
    if "finetune" in protocols:
        results["finetune"] = _finetune(run, train, test, finetune_epochs, finetune_max_train_images, layer_decay)
    if "diagnostics" in protocols:
        results["diagnostics"] = _diagnostics(run, test, diagnostics_images, plots_dir)
    if dense_sources is not None:
        results["dense"] = _dense(run, dense_sources, dense_dataset, dense_epochs, (max_train_images, max_test_images))
    return [row for p in protocols for row in (results[p] if isinstance(results[p], list) else [results[p]])]


def _load(
    run: _Run, protocols: tuple[str, ...], dense_dataset: str, bn_calibration_images: int | None
) -> tuple[ImageSource | None, ImageSource | None, list[ImageSource] | None]:
    """Loads the backbone (or its calibrated random-init twin) into `run` and the splits the protocols need.

    Everything the protocols need is checked before any feature pass.

    Returns:
        The labelled train and test splits of `run.dataset` (None unless an image-level protocol or `finetune` is
        asked for) and the train and test splits of `dense_dataset` (None without `dense`).
    """
    splits = (run.train_split, run.test_split)
    kwargs = {"image_column": run.image_column}  # built-in sets at native size; the eval view resizes
    twin = None
    if run.random_init:
        run.model, run.view, twin = load_random_init(run.model_path, run.seed)
    else:
        run.model, run.view = load_backbone(run.model_path)
    run.pool = applied_pool(run.model, run.pool)  # rows, settings and cache keys name the pooling applied
    dense_sources = None
    if "dense" in protocols:  # check everything the dense protocol needs before any feature pass
        check_dense_backbone(run.model)
        dense_sources = [load_image_source(dense_dataset, split, **kwargs) for split in splits]
        for source, split in zip(dense_sources, splits):
            check_segmentation(source.dataset, f"Split '{split}' of {dense_dataset}")
    train = test = None
    labelled = [p for p in protocols if p in (*FEATURE_PROTOCOLS, "finetune")]
    if labelled or (run.test_fraction is not None and "diagnostics" in protocols):  # the labels, before any pass
        train, test = labelled_splits(
            run.dataset, *splits, run.label_column, run.image_column, run.test_fraction, run.seed
        )
        for source, split in zip((train, test), splits):
            _check_labels(source.dataset, run.label_column, f"Split '{split}' of {run.dataset}")
    if twin is not None:  # random init: what the floor is
        run.floor = calibrate_twin(
            run.model,
            run.view,
            twin,
            run.dataset,
            run.train_split,
            run.image_column,
            bn_calibration_images,
            run.batch_size,
            run.seed,
            train,
        )
    run.identity = {
        "model": model_fingerprint(run.model_path, run.random_init, run.seed, twin),
        "revision": getattr(run.model.config, "_commit_hash", None),  # set for Hub downloads
        "view": view_key(run.view),
    }
    return train, test, dense_sources


def _cached(
    run: _Run, fields: dict, names: tuple[str, str], compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two tensors `compute()` returns, named `names` in the feature cache under `fields` and the run's identity."""
    out = run.store.get_or_compute({**run.identity, **fields}, lambda: dict(zip(names, compute())))
    return out[names[0]], out[names[1]]


def _pooled_features(run: _Run, train: ImageSource, test: ImageSource, start: float) -> _Features:
    """Pooled features of both labelled splits; `seconds` counts from `start` (loading and calibration included)."""

    def pooled(source: ImageSource, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        fields = {**source_key(source, run.dataset, split), "pool": run.pool, "labels": run.label_column}
        return _cached(
            run,
            fields,
            ("features", "labels"),
            lambda: extract_features(
                run.model, source, run.view, run.label_column, run.pool, run.batch_size, desc=f"{split} features"
            ),
        )

    train_f, train_y = pooled(train, run.train_split)
    test_f, test_y = pooled(test, run.test_split)
    return _Features(train_f, train_y, test_f, test_y, round(time.perf_counter() - start, 1))


def _feature_row(run: _Run, protocol: str, features: _Features) -> dict:
    """The fields every row of an image-level protocol on pooled features starts with."""
    return {
        **run.row(protocol, run.dataset),
        "pool": run.pool,
        "num_train": len(features.train_labels),
        "num_test": len(features.test_labels),
        "feature_seconds": features.seconds,
    }


def _knn(run: _Run, features: _Features, k: int, temperature: float) -> dict:
    metrics = knn_accuracy(*features.splits(), k, temperature)
    settings = {"settings": f"k={k}, T={temperature}, {run.pool} features", "k": k, "temperature": temperature}
    return {**_feature_row(run, "knn", features), **settings, **metrics}


def _linear(run: _Run, features: _Features, epochs: int, optimizer: str) -> dict:
    base_lr = PROBE_BASE_LR[optimizer]
    metrics = linear_probe_accuracy(*features.splits(), epochs, base_lr=base_lr, seed=run.seed, optimizer=optimizer)
    settings = {"settings": f"BN+linear, {optimizer.upper()} {epochs} ep, {run.pool} features", "epochs": epochs}
    return {**_feature_row(run, "linear", features), **settings, **metrics}


def _fewshot(run: _Run, features: _Features, shots: tuple[int, ...], trials: int) -> list[dict]:
    feasible = _feasible_shots(shots, features.train_labels)
    return [
        {
            **_feature_row(run, "fewshot", features),
            "settings": f"{r['shots']} per class, {trials} draws, BN+linear, {run.pool} features",
            **r,
        }
        for r in fewshot_accuracy(*features.splits(), shots=feasible, trials=trials, seed=run.seed)
    ]


def _finetune(
    run: _Run, train: ImageSource, test: ImageSource, epochs: int, max_train_images: int | None, layer_decay: float
) -> dict:
    start = time.perf_counter()
    num_classes = 1 + max(pc.max(s.dataset.data.column(run.label_column)).as_py() for s in (train, test))
    metrics = finetune_accuracy(
        run.model,
        train,
        test,
        run.view,
        num_classes,
        epochs=epochs,
        layer_decay=layer_decay,
        pool=run.pool,
        label_column=run.label_column,
        seed=run.seed,
        max_train_images=max_train_images,
    )
    return {
        **run.row("finetune", run.dataset),
        "settings": f"full fine-tune, {epochs} ep on {metrics['num_train']} images, layer decay {layer_decay}, "
        f"{run.pool}",
        **metrics,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _diagnostics(run: _Run, test: ImageSource | None, num_images: int, plots_dir: str | os.PathLike | None) -> dict:
    source = (
        test if test is not None else load_image_source(run.dataset, run.test_split, image_column=run.image_column)
    )
    # one pair of plots per backbone and dataset, as the card keeps one diagnostics row per backbone and dataset
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "-", published_name(run.dataset)).strip("-.")
    prefix = f"{'random_init' if run.random_init else 'pretrained'}_{dataset}"
    geometry = feature_diagnostics(
        run.model, run.view, source, num_images, run.label_column, run.pool, run.seed, plots_dir, prefix
    )
    settings = f"{geometry['num_images']} images, {run.pool} features"  # the images read, not the limit asked for
    return {**run.row("diagnostics", run.dataset), "settings": settings, **geometry}


def _dense(
    run: _Run, sources: list[ImageSource], dataset: str, epochs: int, limits: tuple[int | None, int | None]
) -> dict:
    """The dense patch probe on the first `limits` (train, test) images of `dataset`'s splits `sources`."""
    start = time.perf_counter()
    image_size, patch_size = run.view.image_size, backbone_patch_size(run.model)
    (train_t, train_seg), (test_t, test_seg) = (
        _patch_tokens(run, source, dataset, split, limit)
        for source, split, limit in zip(sources, (run.train_split, run.test_split), limits)
    )
    feature_seconds = time.perf_counter() - start
    metrics = dense_probe(train_t, train_seg, test_t, test_seg, patch_size, image_size, epochs=epochs, seed=run.seed)
    grid = image_size // patch_size
    return {
        **run.row("dense", dataset),
        "settings": f"BN+linear per patch, SGD {epochs} ep, {grid}x{grid} patches of {patch_size} px",
        "epochs": epochs,
        "patch_size": patch_size,
        "image_size": image_size,
        "num_train": len(train_t),
        "num_test": len(test_t),
        **metrics,
        "feature_seconds": round(feature_seconds, 1),
        "probe_seconds": round(time.perf_counter() - start - feature_seconds, 1),
    }


def _patch_tokens(
    run: _Run, source: ImageSource, dataset: str, split: str, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch tokens of the first `limit` images and their segmentation maps at the view size (cached)."""

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        desc = f"{split} tokens"
        tokens, kept = extract_patch_features(run.model, source, run.view, run.batch_size, desc=desc, max_images=limit)
        return tokens, segmentation_maps(source, kept, run.view.image_size, desc)

    return _cached(
        run, {**source_key(source, dataset, split), "patch_tokens": limit}, ("tokens", "segmentation"), compute
    )


def evaluate_knn(model_path: str, dataset: str = "digits", **kwargs) -> dict:
    """Weighted k-NN top-1/top-5 (DINO protocol); see `evaluate_backbone` for the arguments."""
    return evaluate_backbone(model_path, dataset, protocols=("knn",), **kwargs)[0]


def evaluate_dense(model_path: str, dataset: str = "digit-scenes", **kwargs) -> dict:
    """Dense patch probe (mean IoU, pixel and patch accuracy) on `dataset`; see `evaluate_backbone` for the arguments."""
    return evaluate_backbone(model_path, protocols=("dense",), dense_dataset=dataset, **kwargs)[0]


def _feasible_shots(shots: tuple[int, ...], labels: torch.Tensor) -> tuple[int, ...]:
    """The few-shot settings every class has enough training images for; the others are skipped with a warning."""
    smallest = int(torch.bincount(labels.long())[torch.unique(labels.long())].min())
    kept = tuple(n for n in shots if n <= smallest)
    if not kept:
        raise ValueError(
            f"Few-shot: the smallest class has {smallest} training images, fewer than every setting in --shots "
            f"{','.join(map(str, shots))}. Choose smaller --shots."
        )
    if len(kept) < len(shots):
        logger.warning(
            "Few-shot: skipping %s-shot (the smallest class has %d images)", set(shots) - set(kept), smallest
        )
    return kept


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
