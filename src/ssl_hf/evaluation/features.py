"""Feature extraction from an exported backbone (anything `AutoModel.from_pretrained` loads)."""

import json
import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, PreTrainedModel

from ..data.datasets import ImageSource
from ..data.views import IMAGENET_MEAN, IMAGENET_STD, EvalView


Pooling = Literal["cls", "mean"]


def load_backbone(
    path: str | os.PathLike, random_init: bool = False, seed: int = 0
) -> tuple[PreTrainedModel, EvalView]:
    """Loads an exported backbone and its evaluation view (size and normalisation from `preprocessor_config.json`).

    Args:
        path: Export folder or Hub id.
        random_init: Build the same architecture with fresh random weights (the "random init" floor).
        seed: Seed for `random_init`.
    """
    local = Path(path)
    if not local.exists() and (local.is_absolute() or str(path).startswith(".") or str(path).count("/") > 1):
        raise FileNotFoundError(
            f"No exported model at {path}: run `ssl-hf export RUN/final --output_dir {path}` first."
        )
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:  # e.g. `runs/export` (one slash) mistyped: tried as a Hub id
        if local.exists():
            raise
        raise FileNotFoundError(
            f"No exported model at {path} (no such folder, and not loadable as a Hub id: {err}). "
            f"Run `ssl-hf export RUN/final --output_dir {path}` first."
        ) from err
    if random_init:
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    else:
        model = AutoModel.from_pretrained(path)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    processor = Path(path) / "preprocessor_config.json"
    size = getattr(model.config, "image_size", None)  # ViT; a ResNet's input size is in the processor config
    if processor.is_file():
        spec = json.loads(processor.read_text())
        mean, std = spec.get("image_mean", mean), spec.get("image_std", std)
        size = spec.get("size", {}).get("height") or size
    if size is None:
        raise ValueError(f"{path} records no input size: add a preprocessor_config.json (ssl-hf export writes one).")
    return model.eval(), EvalView(size if isinstance(size, int) else size[0], mean, std)


def pooled_features(model: PreTrainedModel, pixel_values: Tensor, pool: Pooling = "cls") -> Tensor:
    """`(B, D)` image features: a ViT's cls token (`pool="cls"`) or mean patch token; a CNN's pooled last stage."""
    out = model(pixel_values=pixel_values)
    if out.last_hidden_state.ndim == 4:  # (B, C, h, w) feature map: ResNet and other CNNs
        pooled = getattr(out, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else out.last_hidden_state.mean((2, 3))
    hidden = out.last_hidden_state
    return hidden[:, 0] if pool == "cls" else hidden[:, 1:].mean(1)


@torch.no_grad()
def extract_features(
    model: PreTrainedModel,
    source: ImageSource,
    view: EvalView,
    label_column: str | None = "label",
    pool: Pooling = "cls",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    desc: str = "features",
) -> tuple[Tensor, Tensor | None]:
    """Runs the backbone over a dataset split.

    Returns:
        features `(N, D)` float32 on CPU (cls token after the final norm, or mean of patch tokens; a CNN's pooled last
        stage) and labels `(N,)`
        (None if `label_column` is None). Undecodable images are dropped with their labels.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    ds = source.dataset
    features, labels = [], []
    for start in tqdm(range(0, len(ds), batch_size), desc=desc, leave=False):
        images, rows = source.read(slice(start, start + batch_size), [label_column] if label_column else [])
        keep = [i for i, im in enumerate(images) if im is not None]
        if not keep:  # every image of this batch was unreadable
            continue
        pixels = view([images[i] for i in keep])["pixel_values"].to(device)
        features.append(pooled_features(model, pixels, pool).float().cpu())
        if label_column is not None:
            labels.append(torch.as_tensor(rows[label_column].copy())[keep])  # arrow buffers are read-only
    return torch.cat(features), (torch.cat(labels) if labels else None)
