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


CLS_FREE_MODEL_TYPES = frozenset({"siglip_vision_model", "siglip2_vision_model"})


def has_cls_token(model: PreTrainedModel) -> bool:
    """Whether a token backbone's `last_hidden_state` starts with a cls token.

    False for SigLIP vision towers (`siglip_vision_model`, `siglip2_vision_model`: patch tokens only) and for models
    without patch tokens (CNNs: no `patch_size` in their config); True for other token models (ViT, DINOv2).
    """
    config = model.config
    return config.model_type not in CLS_FREE_MODEL_TYPES and getattr(config, "patch_size", None) is not None


def pooled_features(model: PreTrainedModel, pixel_values: Tensor, pool: Pooling = "cls") -> Tensor:
    """`(B, D)` image features.

    * ViT / DINOv2 (cls token first): the cls token (`pool="cls"`) or the mean of the other tokens (`pool="mean"`).
    * Models without a cls token (SigLIP vision towers): the mean of all tokens, for both `pool="cls"` and
      `pool="mean"` (the optional attention-pooling head of SigLIP is not used).
    * CNNs (`(B, C, h, w)` feature maps): the pooled last stage, whatever `pool`.
    """
    out = model(pixel_values=pixel_values)
    if out.last_hidden_state.ndim == 4:  # (B, C, h, w) feature map: ResNet and other CNNs
        pooled = getattr(out, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else out.last_hidden_state.mean((2, 3))
    hidden = out.last_hidden_state
    if not has_cls_token(model):
        return hidden.mean(1)
    return hidden[:, 0] if pool == "cls" else hidden[:, 1:].mean(1)


def patch_tokens(model: PreTrainedModel, pixel_values: Tensor) -> Tensor:
    """`(B, L, D)` patch tokens of the last layer (after the final norm), in row-major patch order.

    The cls token is dropped when the model has one (`has_cls_token`), as are DINOv2 register tokens
    (`num_register_tokens` in the config; none in ssl_hf exports).

    Raises:
        ValueError: For CNN backbones (4-D feature maps), which have no patch tokens.
    """
    out = model(pixel_values=pixel_values)
    hidden = out.last_hidden_state
    if hidden.ndim != 3:
        raise ValueError(
            f"{type(model).__name__} returns a {hidden.ndim}-D feature map, not patch tokens: dense (per-patch) "
            "evaluation needs a transformer backbone (ViT, DINOv2, SigLIP); CNNs such as ResNet are not supported."
        )
    if not has_cls_token(model):
        return hidden
    return hidden[:, 1 + (getattr(model.config, "num_register_tokens", 0) or 0) :]


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


@torch.no_grad()
def extract_patch_features(
    model: PreTrainedModel,
    source: ImageSource,
    view: EvalView,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    desc: str = "patch features",
    max_images: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Runs the backbone over the first `max_images` images of a dataset split and keeps every patch token.

    Args:
        model: Token backbone (ViT, DINOv2, SigLIP vision tower).
        source: Map-style dataset split.
        view: Evaluation view (resize + normalise).
        batch_size: Images per forward pass.
        device: Defaults to CUDA when available.
        desc: Progress-bar label.
        max_images: Use only the first `max_images` rows (all when None).

    Returns:
        Patch tokens `(N, L, D)` float32 on CPU (`patch_tokens`: no cls token), and the `(N,)` int64 row indices
        they come from: undecodable images are skipped, so use the indices to align other columns.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    total = len(source.dataset) if max_images is None else min(max_images, len(source.dataset))
    tokens, kept = [], []
    for start in tqdm(range(0, total, batch_size), desc=desc, leave=False):
        images, _ = source.read(slice(start, min(start + batch_size, total)))
        keep = [i for i, im in enumerate(images) if im is not None]
        if not keep:  # every image of this batch was unreadable
            continue
        pixels = view([images[i] for i in keep])["pixel_values"].to(device)
        tokens.append(patch_tokens(model, pixels).float().cpu())
        kept.append(torch.tensor(keep, dtype=torch.long) + start)
    if not tokens:
        raise ValueError(f"No readable image among the first {total} rows: nothing to extract patch features from.")
    return torch.cat(tokens), torch.cat(kept)
