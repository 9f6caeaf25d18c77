"""`evaluate_backbone`: every evaluation protocol of an exported backbone, behind one call."""

import logging
import os
import time

import datasets
import pyarrow.compute as pc
import torch
from transformers import PreTrainedModel

from ..data.datasets import ImageSource, load_image_source
from ..data.views import EvalView
from .cache import FeatureCache, default_cache_dir, model_fingerprint, source_key, view_key
from .dense import (
    backbone_patch_size,
    check_dense_backbone,
    check_segmentation,
    dense_probe,
    segmentation_maps,
)
from .features import extract_features, extract_patch_features, load_backbone, load_random_init
from .fewshot import fewshot_accuracy
from .finetune import finetune_accuracy
from .floor import calibrate_twin
from .knn import knn_accuracy
from .linear_probe import linear_probe_accuracy
from .representation import feature_diagnostics


logger = logging.getLogger(__name__)
PROTOCOLS = ("knn", "linear", "fewshot", "finetune", "dense", "diagnostics")
PROBE_BASE_LR = {"sgd": 0.1, "lars": 6.4}  # per 256 images
FEATURE_PROTOCOLS = ("knn", "linear", "fewshot")  # served by one pass of pooled features


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
        label_column: Integer class column of `dataset`.
        image_column: Image column (of `dataset` and `dense_dataset`); found automatically when None.
        k: Neighbours of `knn`.
        temperature: Temperature of `knn`.
        probe_epochs: Epochs of `linear`.
        probe_optimizer: `sgd` (momentum 0.9, base lr 0.1) or `lars` (MAE's linear probe: its absolute lr 0.1 x
            16384 / 256 = 6.4 at batch 256, since LARS moves each layer by lr x 1e-3 of its norm per step).
        pool: `cls` or `mean` image features for `knn` and `linear` (models without a cls token always average).
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
        plots_dir: `diagnostics`: write the spectrum and projection PNGs here (None: no plots).
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
    image_protocols = [p for p in protocols if p in FEATURE_PROTOCOLS]
    start = time.perf_counter()
    kwargs = {"image_column": image_column}  # built-in sets at native size; the eval view resizes
    if random_init:
        model, view, twin = load_random_init(model_path, seed)
    else:
        model, view = load_backbone(model_path)
    backbone = "random_init" if random_init else "pretrained"
    dense_sources = None
    if "dense" in protocols:  # check everything the dense protocol needs before any feature pass
        check_dense_backbone(model)
        dense_sources = [load_image_source(dense_dataset, split, **kwargs) for split in (train_split, test_split)]
        for source, split in zip(dense_sources, (train_split, test_split)):
            check_segmentation(source.dataset, f"Split '{split}' of {dense_dataset}")
    store = FeatureCache((cache_dir or default_cache_dir()) if cache else None)
    train = None
    if image_protocols or "finetune" in protocols:  # check the labels before any feature pass
        train, test = (load_image_source(dataset, split, **kwargs) for split in (train_split, test_split))
        for source, split in ((train, train_split), (test, test_split)):
            _check_labels(source.dataset, label_column, f"Split '{split}' of {dataset}")
    label = {}  # random init: what the floor is
    if random_init:
        label = calibrate_twin(
            model, view, twin, dataset, train_split, image_column, bn_calibration_images, batch_size, seed, train
        )
    identity = {
        "model": model_fingerprint(model_path, random_init, seed, twin if random_init else None),
        "revision": getattr(model.config, "_commit_hash", None),  # set for Hub downloads
        "view": view_key(view),
    }
    results = {}
    if image_protocols:

        def pooled(source: ImageSource, split: str) -> tuple[torch.Tensor, torch.Tensor]:
            fields = {**identity, **source_key(source, dataset, split), "pool": pool, "labels": label_column}
            out = store.get_or_compute(
                fields,
                lambda: dict(
                    zip(
                        ("features", "labels"),
                        extract_features(
                            model, source, view, label_column, pool, batch_size, desc=f"{split} features"
                        ),
                    )
                ),
            )
            return out["features"], out["labels"]

        train_f, train_y = pooled(train, train_split)
        test_f, test_y = pooled(test, test_split)
        common = {
            "backbone": backbone,
            **label,
            "model": str(model_path),
            "dataset": dataset,
            "split": test_split,
            "pool": pool,
            "num_train": len(train_y),
            "num_test": len(test_y),
            "feature_seconds": round(time.perf_counter() - start, 1),
        }
        for protocol in image_protocols:
            if protocol == "knn":
                metrics = knn_accuracy(train_f, train_y, test_f, test_y, k, temperature)
                settings = {"settings": f"k={k}, T={temperature}, {pool} features", "k": k, "temperature": temperature}
            elif protocol == "linear":
                base_lr = PROBE_BASE_LR[probe_optimizer]
                metrics = linear_probe_accuracy(
                    train_f,
                    train_y,
                    test_f,
                    test_y,
                    probe_epochs,
                    base_lr=base_lr,
                    seed=seed,
                    optimizer=probe_optimizer,
                )
                name = probe_optimizer.upper()
                settings = {
                    "settings": f"BN+linear, {name} {probe_epochs} ep, {pool} features",
                    "epochs": probe_epochs,
                }
            else:
                results[protocol] = [
                    {
                        "protocol": protocol,
                        **common,
                        "settings": f"{r['shots']} per class, {fewshot_trials} draws, BN+linear, {pool} features",
                        **r,
                    }
                    for r in fewshot_accuracy(
                        train_f,
                        train_y,
                        test_f,
                        test_y,
                        shots=_feasible_shots(shots, train_y),
                        trials=fewshot_trials,
                        seed=seed,
                    )
                ]
                continue
            results[protocol] = {"protocol": protocol, **common, **settings, **metrics}
    if "finetune" in protocols:
        start = time.perf_counter()
        num_classes = 1 + max(pc.max(s.dataset.data.column(label_column)).as_py() for s in (train, test))
        metrics = finetune_accuracy(
            model,
            train,
            test,
            view,
            num_classes,
            epochs=finetune_epochs,
            layer_decay=layer_decay,
            pool=pool,
            label_column=label_column,
            seed=seed,
            max_train_images=finetune_max_train_images,
        )
        limit = "all" if finetune_max_train_images is None else finetune_max_train_images
        results["finetune"] = {
            "protocol": "finetune",
            "backbone": backbone,
            **label,
            "model": str(model_path),
            "dataset": dataset,
            "split": test_split,
            "settings": f"full fine-tune, {finetune_epochs} ep on {limit} images, layer decay {layer_decay}, {pool}",
            **metrics,
            "seconds": round(time.perf_counter() - start, 1),
        }
    if "diagnostics" in protocols:
        source = load_image_source(dataset, test_split, **kwargs)
        prefix = "random_init" if random_init else "pretrained"
        results["diagnostics"] = {
            "protocol": "diagnostics",
            "backbone": backbone,
            **label,
            "model": str(model_path),
            "dataset": dataset,
            "split": test_split,
            "settings": f"{diagnostics_images} images, {pool} features",
            **feature_diagnostics(
                model, view, source, diagnostics_images, label_column, pool, seed, plots_dir, prefix
            ),
        }
    if dense_sources is not None:
        start = time.perf_counter()
        image_size, patch_size = view.image_size, backbone_patch_size(model)

        def tokens(source: ImageSource, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
            fields = {**identity, **source_key(source, dense_dataset, split), "patch_tokens": limit}
            out = store.get_or_compute(
                fields,
                lambda: dict(
                    zip(
                        ("tokens", "segmentation"),
                        _dense_split(model, source, view, batch_size, limit, f"{split} tokens"),
                    )
                ),
            )
            return out["tokens"], out["segmentation"]

        (train_t, train_seg), (test_t, test_seg) = (
            tokens(source, split, limit)
            for source, split, limit in zip(
                dense_sources, (train_split, test_split), (max_train_images, max_test_images)
            )
        )
        feature_seconds = time.perf_counter() - start
        metrics = dense_probe(
            train_t, train_seg, test_t, test_seg, patch_size, image_size, epochs=dense_epochs, seed=seed
        )
        grid = image_size // patch_size
        results["dense"] = {
            "protocol": "dense",
            "backbone": backbone,
            **label,
            "model": str(model_path),
            "dataset": dense_dataset,
            "split": test_split,
            "settings": f"BN+linear per patch, SGD {dense_epochs} ep, {grid}x{grid} patches of {patch_size} px",
            "epochs": dense_epochs,
            "patch_size": patch_size,
            "image_size": image_size,
            "num_train": len(train_t),
            "num_test": len(test_t),
            **metrics,
            "feature_seconds": round(feature_seconds, 1),
            "probe_seconds": round(time.perf_counter() - start - feature_seconds, 1),
        }
    return [row for p in protocols for row in (results[p] if isinstance(results[p], list) else [results[p]])]


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


def _dense_split(
    model: PreTrainedModel, source: ImageSource, view: EvalView, batch_size: int, limit: int | None, desc: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch tokens of the first `limit` images and their segmentation maps at the view size (nearest resize)."""
    tokens, kept = extract_patch_features(model, source, view, batch_size, desc=desc, max_images=limit)
    return tokens, segmentation_maps(source, kept, view.image_size, desc)


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
