"""Feature extraction from an exported backbone (anything `AutoModel.from_pretrained` loads)."""

import json
import logging
import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel

from ..data.datasets import ImageSource
from ..data.pixels import IMAGENET_MEAN, IMAGENET_STD
from ..data.views import EvalView
from ..published import LOCAL_RECORD
from ..registry import METHODS


logger = logging.getLogger(__name__)
Pooling = Literal["cls", "mean"]


def load_backbone(
    path: str | os.PathLike, random_init: bool = False, seed: int = 0
) -> tuple[PreTrainedModel, EvalView]:
    """Loads an exported backbone and its evaluation view (size and normalisation from `preprocessor_config.json`).

    Args:
        path: Export folder or Hub id.
        random_init: Build the random-init twin instead (`load_random_init`; BatchNorm statistics not calibrated).
        seed: Seed of the transformers init of `random_init` (the method init uses its run's seed).
    """
    if random_init:
        model, view, _ = load_random_init(path, seed)
        return model, view
    _export_config(path)  # a helpful error for a missing export
    model = AutoModel.from_pretrained(path)
    return model.eval(), _eval_view(path, model)


def load_random_init(path: str | os.PathLike, seed: int = 0) -> tuple[PreTrainedModel, EvalView, dict]:
    """Builds the random-init twin of an export (the floor): its architecture with the weights it had at step 0.

    With the export's `training_args.json` (written by `ssl-hf export` from a run's `final/` folder), the twin is the
    run's encoder before its first optimiser step, rebuilt as the pre-training loop builds it: `set_seed` with the
    run's seed, the method's model from the recorded config, `prepare_for_pretraining`, then the encoder the export
    saves (`ssl_hf.export.exported_encoder`, in the export's format); a run started with `--init_from DIR` has DIR's
    weights at step 0, so its floor is DIR's encoder (`floor_init` `init_from`). MAE, ASL and TEC thus get MAE's init (fixed
    sin-cos positions, xavier weights; TEC with `init_from_base`: its base model's weights). Otherwise (a Hub id, a folder without the record, or a record that does not
    rebuild this architecture) the twin is `AutoModel.from_config` after `torch.manual_seed(seed)`: transformers'
    init. BatchNorm running statistics stay as built (mean 0, variance 1): see `calibrate_batchnorm`.

    Args:
        path: Export folder or Hub id.
        seed: Seed of the transformers init (the method init uses the run's own seed).

    Returns:
        The twin in eval mode, its evaluation view, and how it was built: `floor_init` (`method` or `config`),
        `floor_seed`, and `floor_method` (the method's name, for `method`).
    """
    config = _export_config(path)
    # the local copy keeps the paths the published record shortens (--init_from, TEC's base model)
    record_path = next(
        (p for p in (Path(path) / LOCAL_RECORD, Path(path) / "training_args.json") if p.is_file()), None
    )
    record = json.loads(record_path.read_text()) if record_path is not None else {}
    run_seed = (record.get("training") or {}).get("seed")
    if record.get("method") in METHODS and isinstance(record.get("model_config"), dict) and isinstance(run_seed, int):
        init_from = (record.get("training") or {}).get("init_from")
        model = _method_init(config, record["method"], record["model_config"], run_seed, init_from)
        if model is not None:
            floor = {"floor_init": "method", "floor_seed": run_seed, "floor_method": record["method"]}
            if init_from:
                floor.update(floor_init="init_from", floor_init_from=init_from)
            return model.eval(), _eval_view(path, model), floor
        logger.warning("%s: training_args.json does not rebuild this architecture: transformers' init instead.", path)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    return model.eval(), _eval_view(path, model), {"floor_init": "config", "floor_seed": seed}


def _method_init(
    config: PreTrainedConfig, method: str, model_config: dict, seed: int, init_from: str | None = None
) -> PreTrainedModel | None:
    """The exported encoder of `method`'s model at step 0, or None when it is not the architecture of `config`.

    A run started with `--init_from DIR` began from DIR's weights: they are its step 0 (DIR must still exist).
    """
    from accelerate.utils import set_seed

    from ..export import exported_encoder
    from ..training.init_from import load_init_weights

    spec = METHODS[method]
    set_seed(seed)  # as `ssl_hf.training.loop.pretrain`
    pretraining = spec.model_class(spec.config_class.from_dict(model_config))
    pretraining.prepare_for_pretraining(resumed=bool(init_from))
    if init_from:
        if not (Path(init_from) / "config.json").is_file():
            raise FileNotFoundError(
                f"The run started from --init_from {init_from}, so its step-0 encoder (the floor) is that model's "
                "encoder, and the folder is gone: restore it (or re-run `ssl-hf convert --full`) to evaluate the floor."
            )
        load_init_weights(pretraining, init_from)
    keep_adapters = config.model_type == spec.config_class.model_type  # TEC's `--keep_adapters` export
    model = exported_encoder(pretraining, "dinov2" if config.model_type == "dinov2" else "vit", keep_adapters)
    with torch.device("meta"):
        reference = AutoModel.from_config(config).state_dict()
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    return model if shapes == {name: tensor.shape for name, tensor in reference.items()} else None


def _export_config(path: str | os.PathLike) -> PreTrainedConfig:
    """The export's config, with an error naming `ssl-hf export` when there is none."""
    local = Path(path)
    if not local.exists() and (local.is_absolute() or str(path).startswith(".") or str(path).count("/") > 1):
        raise FileNotFoundError(
            f"No exported model at {path}: run `ssl-hf export RUN/final --output_dir {path}` first."
        )
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as err:  # e.g. `runs/export` (one slash) mistyped: tried as a Hub id
        if local.exists():
            raise
        raise FileNotFoundError(
            f"No exported model at {path} (no such folder, and not loadable as a Hub id: {err}). "
            f"Run `ssl-hf export RUN/final --output_dir {path}` first."
        ) from err


def _eval_view(path: str | os.PathLike, model: PreTrainedModel) -> EvalView:
    """The evaluation view of an export: size and normalisation from its `preprocessor_config.json`."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    processor = Path(path) / "preprocessor_config.json"
    size = getattr(model.config, "image_size", None)  # ViT; a ResNet's input size is in the processor config
    if processor.is_file():
        spec = json.loads(processor.read_text())
        mean, std = spec.get("image_mean", mean), spec.get("image_std", std)
        size = spec.get("size", {}).get("height") or size
    if size is None:
        raise ValueError(f"{path} records no input size: add a preprocessor_config.json (ssl-hf export writes one).")
    return EvalView(size if isinstance(size, int) else size[0], mean, std)


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of `model` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def calibrate_batchnorm(
    model: nn.Module,
    source: ImageSource,
    view: EvalView,
    max_images: int | None = 2048,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> int:
    """Estimates every BatchNorm's running statistics on images of `source` ("precise BN").

    A freshly built network holds running means 0 and variances 1, so in eval mode each BatchNorm is nearly the
    identity and a random-init floor scores as a network that never saw data statistics (a random ResNet-18 rates far
    higher on k-NN that way). This resets the statistics, switches each BatchNorm to a cumulative average
    (`momentum=None`) and runs no-grad forward passes with only the BatchNorm layers in train mode (dropout and the
    rest stay in eval mode). Each layer ends with the average over batches of its batch mean and unbiased batch
    variance at its input: the exact statistics of the images when they fit in one batch. The momenta are restored
    and the model is left in eval mode.

    Args:
        model: Backbone taking `pixel_values`.
        source: Map-style split to estimate on (the training split of the evaluation dataset).
        view: Evaluation view.
        max_images: Images drawn at random without replacement (all of the split when None or larger).
        batch_size: Most images per forward pass (the batches are split evenly).
        seed: Seed of the draw and of the order of the images.
        device: Defaults to CUDA when available.

    Returns:
        The number of images the statistics come from; 0 for a model without BatchNorm (left untouched).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    momenta = [m.momentum for m in layers]
    order = torch.randperm(len(source.dataset), generator=torch.Generator().manual_seed(seed))[:max_images]
    count = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        batches = order.tensor_split(max(1, -(-len(order) // batch_size)))  # even sizes: no batch of 1 at the end
        for rows in tqdm(batches, desc="BatchNorm statistics", leave=False):
            images = [im for im in source.read(rows.tolist())[0] if im is not None]
            if images:
                model(pixel_values=view(images)["pixel_values"].to(device))
                count += len(images)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    if not count:
        raise ValueError("No readable image to estimate the BatchNorm statistics on.")
    return count


CLS_FREE_MODEL_TYPES = frozenset({"siglip_vision_model", "siglip2_vision_model"})


def has_cls_token(model: PreTrainedModel) -> bool:
    """Whether a token backbone's `last_hidden_state` starts with a cls token.

    False for SigLIP vision towers (`siglip_vision_model`, `siglip2_vision_model`: patch tokens only) and for models
    without patch tokens (CNNs: no `patch_size` in their config); True for other token models (ViT, DINOv2).
    """
    config = model.config
    return config.model_type not in CLS_FREE_MODEL_TYPES and getattr(config, "patch_size", None) is not None


def applied_pool(model: PreTrainedModel, pool: Pooling) -> Pooling:
    """The pooling `pooled_features(model, ..., pool)` applies: `mean` whenever the model has no cls token.

    Models without a cls token (SigLIP vision towers: the mean of their patch tokens) and CNNs (their average-pooled
    last stage) give `mean` whatever `pool` asks; token models with a cls token give `pool`. Results record this
    value, so a SelfPatch row says `mean` even when `cls` was asked for.
    """
    return pool if has_cls_token(model) else "mean"


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
