"""Representation diagnostics of a backbone: the geometry of its features (the `diagnostics` protocol)."""

import os

import torch
from transformers import PreTrainedModel

from ..data.datasets import ImageSource, load_image_source
from ..data.views import EvalView
from .features import applied_pool, load_backbone, load_random_init, patch_tokens, pooled_features
from .floor import calibrate_twin


def representation_diagnostics(
    model_path: str,
    dataset: str = "digits",
    *,
    split: str = "test",
    num_images: int = 1024,
    image_column: str | None = None,
    label_column: str | None = "label",
    pool: str = "cls",
    random_init: bool = False,
    seed: int = 0,
    plots_dir: str | os.PathLike | None = None,
    train_split: str = "train",
    bn_calibration_images: int | None = 2048,
) -> dict:
    """Geometry of an exported backbone's features on the first `num_images` images of a split.

    See `feature_diagnostics`; this loads the export first. With `random_init`, the twin is built and calibrated as
    in `evaluate_backbone` (its BatchNorm statistics from `bn_calibration_images` images of `train_split`), and the
    report names it (`floor`, `floor_init`, `bn_calibration_images`).
    """
    label = {}
    if random_init:
        model, view, twin = load_random_init(model_path, seed)
        label = calibrate_twin(model, view, twin, dataset, train_split, image_column, bn_calibration_images, 256, seed)
    else:
        model, view = load_backbone(model_path)
    source = load_image_source(dataset, split, image_column=image_column)
    prefix = "random_init" if random_init else "pretrained"
    return {
        "dataset": dataset,
        "split": split,
        "backbone": "random-init" if random_init else "pretrained",
        **label,
        **feature_diagnostics(model, view, source, num_images, label_column, pool, seed, plots_dir, prefix),
    }


@torch.no_grad()
def feature_diagnostics(
    model: PreTrainedModel,
    view: EvalView,
    source: ImageSource,
    num_images: int = 1024,
    label_column: str | None = "label",
    pool: str = "cls",
    seed: int = 0,
    plots_dir: str | os.PathLike | None = None,
    prefix: str = "pretrained",
) -> dict:
    """Alignment, uniformity, effective rank, embedding std and token cosine similarity of a backbone's features.

    Alignment (Wang & Isola 2020: mean squared distance of the normalised features of two augmented views of the same
    image, SimCLR-style views with every colour op) and uniformity (log of the mean Gaussian potential, t = 2) as in
    MSBReg's Tab. 3, plus the effective rank and the per-dimension std of the normalised features of the plain
    (evaluation-view) images, and the mean pairwise cosine similarity of each image's patch tokens (None for CNNs).
    Lower alignment is better; lower (more negative) uniformity means a wider spread; token similarity near 1 means
    the patch tokens carry the same information. With `plots_dir`, also writes the singular-value spectrum and a 2-D
    PCA of the features coloured by label as PNGs (`plot_diagnostics`). `pool` in the report is the pooling applied
    (`applied_pool`: `mean` for models without a cls token).
    """
    import numpy as np

    from ..data.color import MultiView
    from .diagnostics import alignment, effective_rank, embedding_std, token_cosine_similarity, uniformity
    from .plots import plot_diagnostics

    count = min(num_images, len(source.dataset))
    columns = [label_column] if label_column and label_column in source.dataset.column_names else []
    images, rows = source.read(slice(0, count), columns)
    keep = [i for i, im in enumerate(images) if im is not None]
    images = [images[i] for i in keep]
    labels = torch.as_tensor(rows[columns[0]].copy())[keep] if columns else None
    rngs = [np.random.default_rng((seed, 7919, i)) for i in range(len(images))]
    pairs = MultiView(view.image_size, 2, mean=view.mean, std=view.std)(images, rngs)["pixel_values"]
    chunks = range(0, len(images), 256)

    def embed(batches) -> torch.Tensor:
        return torch.cat([pooled_features(model, pixels, pool) for pixels in batches])

    plain = embed(view(images[i : i + 256])["pixel_values"] for i in chunks)
    first, second = (embed(pairs[i : i + 256, k] for i in chunks) for k in (0, 1))
    token_similarity = None
    if getattr(model.config, "patch_size", None) is not None:  # token backbones
        total = 0.0
        for i in chunks:  # per-batch means, weighted by batch size
            batch = images[i : i + 256]
            total += token_cosine_similarity(patch_tokens(model, view(batch)["pixel_values"])) * len(batch)
        token_similarity = total / len(images)
    out = {
        "num_images": len(images),
        "pool": applied_pool(model, pool),
        "alignment": alignment(first, second),
        "uniformity": uniformity(plain),
        "effective_rank": effective_rank(plain),
        "embedding_std": embedding_std(plain),
        "token_cosine_similarity": token_similarity,
    }
    if plots_dir is not None:
        paths = plot_diagnostics(plain, labels, plots_dir, prefix)
        out["plots"] = {name: str(path) for name, path in paths.items()}
    return out
