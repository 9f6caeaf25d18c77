"""End-to-end fine-tuning of an exported backbone with layer-wise lr decay (MAE / BEiT recipe, light augmentation)."""

import copy
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..data.datasets import ImageSource
from ..data.pixels import normalize, random_resized_box, resized_crops
from ..data.views import EvalView
from .features import Pooling, applied_pool, pooled_features
from .knn import topk_accuracy


# Where the blocks of each supported backbone live (transformers 5.x names first; 4.x ViT used `encoder.layer`).
_BLOCK_LISTS = ("layers", "encoder.layer", "encoder.layers", "encoder.stages")
_EMBEDDING_MODULES = ("embeddings", "embedder")
# Tokens and position tables never take weight decay (SigLIP: `position_embedding.weight`; its pooling head: `probe`).
_NO_DECAY_KEYS = ("cls_token", "mask_token", "position_embedding", "pos_embed", "register_tokens", "probe")


def _block_list(model: nn.Module) -> tuple[str, int]:
    """The name and length of the backbone's `ModuleList` of blocks (ResNet: of stages)."""
    modules = dict(model.named_modules())
    for name in _BLOCK_LISTS:
        if isinstance(modules.get(name), nn.ModuleList):
            return name, len(modules[name])
    raise ValueError(
        f"Layer-wise lr decay needs a backbone loaded with AutoModel whose blocks are one of the module lists "
        f"{', '.join(_BLOCK_LISTS)} (ViTModel, Dinov2Model, SiglipVisionModel, ResNetModel); "
        f"{type(model).__name__} has none. Fine-tune it with layer_decay=1.0 on a supported model instead."
    )


def layer_id(name: str, blocks: str, num_layers: int) -> int:
    """MAE's layer id of a backbone parameter: 0 for the embeddings, `i + 1` for block `i`, `L + 1` for the rest.

    Args:
        name: Parameter name in the backbone (`model.named_parameters()`).
        blocks: Name of the backbone's block list (`layers`, `encoder.layer`, `encoder.layers`, `encoder.stages`).
        num_layers: `L`, the number of blocks.
    """
    if name.split(".", 1)[0] in _EMBEDDING_MODULES:
        return 0
    match = re.match(rf"{re.escape(blocks)}\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def layer_decay_param_groups(
    model: PreTrainedModel,
    head: nn.Module | None,
    base_lr: float,
    layer_decay: float = 0.75,
    weight_decay: float = 0.05,
) -> list[dict]:
    """Parameter groups with layer-wise lr decay (MAE's `util/lr_decay.py`, BEiT) for a backbone and its head.

    Layer ids, with `L` blocks:

    * 0: the embeddings (`embeddings.*`: patch projection, cls/mask tokens, position embeddings; ResNet: `embedder.*`);
    * `i + 1`: block `i` (`ViTModel` in transformers 5: `layers.{i}`, 4.x: `encoder.layer.{i}`; `Dinov2Model`:
      `encoder.layer.{i}`; `SiglipVisionModel`: `encoder.layers.{i}`);
    * `L + 1`: everything after the blocks (final `layernorm` / `post_layernorm`, `pooler`, SigLIP's attention-pooling
      `head`) and the classification `head`.

    Each group's lr is `base_lr * layer_decay ** (L + 1 - layer_id)`: the head and final norm train at `base_lr`, the
    embeddings at `base_lr * layer_decay ** (L + 1)`. Weight decay applies to weights of >= 2 dimensions only: biases,
    norm parameters, layer scales and the cls/mask/register tokens and position tables get none.

    ResNets (`ResNetModel` and the small-stem variant) are supported with their stages as layers: stem (`embedder`) =
    0, stage `s` = `s + 1`, `L` = number of stages (4), the head = `L + 1`. The usual ResNet fine-tune has no layer
    decay: pass `layer_decay=1.0` for that.

    Args:
        model: Backbone loaded with `AutoModel` (not a `...ForImageClassification` wrapper).
        head: Classification head on the pooled feature, or None.
        base_lr: Learning rate of the last layer id (the head).
        layer_decay: Per-layer lr factor (MAE: 0.75 for ViT-L/H, 0.65 for ViT-B).
        weight_decay: AdamW decay of the >= 2-D weights.

    Returns:
        One dict per (layer id, decay or not) that has parameters, ordered by layer id: `params`, `lr`,
        `weight_decay`, `layer_id`, `lr_scale` and `param_names` (names in the backbone; `classifier.`-prefixed for
        the head's, since SigLIP's backbone has a `head` of its own). Frozen parameters are left out. `torch.optim.AdamW` accepts the dicts as they are.

    Raises:
        ValueError: If the backbone's blocks are not found (not a ViT, DINOv2, SigLIP vision or ResNet model).
    """
    blocks, num_layers = _block_list(model)
    named = [(name, p, layer_id(name, blocks, num_layers)) for name, p in model.named_parameters()]
    if head is not None:
        named += [(f"classifier.{name}", p, num_layers + 1) for name, p in head.named_parameters()]
    groups: dict[tuple[int, bool], dict] = {}
    for name, param, layer in named:
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and not any(key in name for key in _NO_DECAY_KEYS)
        if (layer, decay) not in groups:
            scale = layer_decay ** (num_layers + 1 - layer)
            groups[layer, decay] = {
                "params": [],
                "param_names": [],
                "lr": base_lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decay else 0.0,
                "layer_id": layer,
            }
        groups[layer, decay]["params"].append(param)
        groups[layer, decay]["param_names"].append(name)
    return [groups[key] for key in sorted(groups, key=lambda key: (key[0], not key[1]))]


def _lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up from ~0 over `warmup` steps, then cosine decay to `min_ratio` at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _augment(images: list[Tensor], rngs: list[np.random.Generator], view: EvalView) -> Tensor:
    """Random-resized crop (scale 0.5-1, ratio 3/4-4/3) + horizontal flip at the view's size, normalised."""
    boxes = [random_resized_box(rng, *im.shape[-2:], (0.5, 1.0), (3 / 4, 4 / 3)) for im, rng in zip(images, rngs)]
    flips = [bool(rng.random() < 0.5) for rng in rngs]
    return normalize(resized_crops(images, boxes, flips, view.image_size), view.mean, view.std)


def _read(source: ImageSource, rows: list[int], label_column: str) -> tuple[list[Tensor], list[int], Tensor]:
    """Decoded images of `rows` (unreadable ones dropped), the kept rows and their labels."""
    images, columns = source.read(rows, [label_column])
    keep = [i for i, im in enumerate(images) if im is not None]
    labels = torch.as_tensor(columns[label_column].copy())[keep].long()  # arrow buffers are read-only
    return [images[i] for i in keep], [rows[i] for i in keep], labels


def _subset(num_rows: int, limit: int | None, seed: int) -> np.ndarray:
    """All rows, or `limit` of them drawn at random (seeded) and sorted (datasets may be sorted by class)."""
    if limit is None or limit >= num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng((seed, 104729)).choice(num_rows, limit, replace=False))


def _check_labels(labels: Tensor, num_classes: int) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Labels must lie in [0, {num_classes}) (num_classes={num_classes}); found {labels.min()}..{labels.max()}."
        )


def finetune_accuracy(
    model: PreTrainedModel,
    train_source: ImageSource,
    test_source: ImageSource,
    view: EvalView,
    num_classes: int,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    base_lr: float = 1e-3,
    layer_decay: float = 0.75,
    weight_decay: float = 0.05,
    warmup_epochs: float = 1.0,
    min_lr: float = 1e-6,
    label_smoothing: float = 0.1,
    pool: Pooling = "cls",
    label_column: str = "label",
    seed: int = 0,
    max_train_images: int | None = None,
    max_test_images: int | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Fine-tunes a copy of the backbone plus a linear head end to end and scores it on the test split.

    MAE's fine-tune recipe, reduced to what stays cheap: AdamW (betas 0.9, 0.999) over `layer_decay_param_groups`,
    `lr = base_lr * batch_size / 256`, per-step linear warm-up then cosine decay to `min_lr` (each group scaled by its
    `lr_scale`), label smoothing, and light augmentation: a random-resized crop (area 0.5-1) and a horizontal flip of
    the decoded uint8 image (`random_resized_box` + `resized_crops`), seeded per sample from `(seed, epoch, row)`. No
    mixup/cutmix, RandAugment, random erasing or drop path. The head is `Linear(D, num_classes)` (trunc-normal weight
    with std 2e-5, zero bias, as MAE) on `pooled_features(model, pixels, pool)`: the cls token or the mean of the patch
    tokens (`pool="mean"`, MAE's global pool without its `fc_norm`); models without a cls token (SigLIP) always average,
    CNNs use their pooled last stage. The test split goes through `view` (resize + normalise) only.

    `model` itself is not modified: the function trains a deep copy (all parameters trainable, train mode). Parameters
    the pooled feature does not use (ViT `pooler`, SigLIP attention-pooling head) get no gradient and stay put.

    Cost (measured once): a random-init ViT-Tiny/4 at 32 px (`backbone_config("vit-tiny", 32, 4)`, 5.4 M params, 65
    tokens) on `digits` (7,190 train / 1,795 test images) with the defaults (3 epochs, batch 128) took 595 s end to end
    (581 s training, 13 s test) with one thread on a 2-core CPU shared with another long job: ~155 s per epoch (46 train
    images/s) once warm, the first epoch slower under contention. Expect roughly 8 minutes on one free core and less
    with two threads; `max_train_images` or fewer `epochs` shorten it proportionally. That run reached top-1 0.157
    (random init, 3 epochs: a pipeline check, not a meaningful number).

    Args:
        model: Backbone loaded with `AutoModel` (`load_backbone`): ViT, DINOv2, SigLIP vision tower or ResNet.
        train_source: Labelled training split (map-style).
        test_source: Labelled test split (map-style).
        view: Evaluation view of the backbone (size and normalisation; `load_backbone` returns it).
        num_classes: Classes of the head; labels must lie in `[0, num_classes)`.
        epochs: Passes over the (sub-sampled) training split.
        batch_size: Images per step.
        base_lr: Learning rate per 256 images (MAE: 1e-3; 5e-4 for ViT-B).
        layer_decay: Layer-wise lr decay (MAE: 0.75; 0.65 for ViT-B; 1.0 disables it).
        weight_decay: AdamW decay of the >= 2-D weights (none on biases, norms, tokens, position tables).
        warmup_epochs: Epochs of linear warm-up (fractions allowed).
        min_lr: Final learning rate of the cosine schedule (before the layer scale; MAE: 1e-6).
        label_smoothing: Of the cross-entropy (MAE: 0.1).
        pool: `cls` or `mean` feature for the head (see `pooled_features`).
        label_column: Integer class column of both splits.
        seed: Seed of the head, the batch order, the augmentations and the `max_train_images` subset.
        max_train_images: Train on this many training rows drawn at random (seeded; None: all).
        max_test_images: Score on the first this many test rows (None: all).
        device: Defaults to CUDA when available.

    Returns:
        `top1`, `top5` (fractions, on the test split), `epochs`, `num_train`, `num_test`, `batch_size`, `lr`,
        `base_lr`, `layer_decay`, `weight_decay`, `pool` (the one applied, `applied_pool`), `train_loss` and
        `train_top1` (per epoch, on the augmented training batches), `train_seconds` and `eval_seconds`.

    Raises:
        ValueError: If the backbone's blocks are not found (`layer_decay_param_groups`), a label is outside
            `[0, num_classes)`, or no training image is readable.
    """
    start = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    backbone, head = _backbone_and_head(model, view, num_classes, pool, device)
    lr = base_lr * batch_size / 256
    groups = layer_decay_param_groups(backbone, head, lr, layer_decay, weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    run = _FineTuning(backbone, head, optimizer, view, pool, num_classes, label_column, label_smoothing, seed, device)
    rows = _subset(len(train_source.dataset), max_train_images, seed)
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    lrs = _lr_schedule(lr, epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch), min_lr)
    history_loss, history_top1, num_train = _train(run, train_source, rows, lrs, epochs, batch_size)
    train_seconds = time.perf_counter() - start
    scores, targets = _predict(run, test_source, max_test_images)
    metrics = topk_accuracy(scores, targets)
    return {
        **metrics,
        "epochs": epochs,
        "num_train": num_train,
        "num_test": len(targets),
        "batch_size": batch_size,
        "lr": lr,
        "base_lr": base_lr,
        "layer_decay": layer_decay,
        "weight_decay": weight_decay,
        "pool": applied_pool(model, pool),
        "train_loss": history_loss,
        "train_top1": history_top1,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - start - train_seconds, 1),
    }


@dataclass
class _FineTuning:
    """The backbone copy being fine-tuned, its head and optimiser, and the settings every step uses."""

    backbone: PreTrainedModel
    head: nn.Linear
    optimizer: torch.optim.Optimizer
    view: EvalView
    pool: Pooling
    num_classes: int
    label_column: str
    label_smoothing: float
    seed: int
    device: torch.device

    def logits(self, pixels: Tensor) -> Tensor:
        return self.head(pooled_features(self.backbone, pixels, self.pool))


def _backbone_and_head(
    model: PreTrainedModel, view: EvalView, num_classes: int, pool: Pooling, device: torch.device
) -> tuple[PreTrainedModel, nn.Linear]:
    """A trainable deep copy of `model` and a `Linear(D, num_classes)` head (MAE's init) on its pooled feature."""
    backbone = copy.deepcopy(model).to(device).requires_grad_(True)
    backbone.eval()
    with torch.no_grad():  # feature width, whatever the architecture (eval mode: BatchNorm accepts one image)
        dummy = torch.zeros(1, 3, view.image_size, view.image_size, device=device)
        dim = pooled_features(backbone, dummy, pool).shape[1]
    head = nn.Linear(dim, num_classes).to(device)
    nn.init.trunc_normal_(head.weight, std=2e-5)
    nn.init.zeros_(head.bias)
    return backbone, head


def _lr_schedule(lr: float, total: int, warmup: int, min_lr: float) -> list[float]:
    """The learning rate of each of `total` steps: linear warm-up over `warmup` steps, then cosine decay to `min_lr`."""
    min_ratio = min(1.0, min_lr / lr) if lr > 0 else 0.0
    return [lr * _lr_factor(step, warmup, total, min_ratio) for step in range(total)]


def _train(
    run: _FineTuning, source: ImageSource, rows: np.ndarray, lrs: list[float], epochs: int, batch_size: int
) -> tuple[list[float], list[float], int]:
    """Trains `epochs` passes over `rows` in a seeded order, one learning rate of `lrs` per batch.

    Returns:
        The mean loss and the top-1 of each epoch (on the augmented batches), and the images of the last epoch.
    """
    generator = torch.Generator().manual_seed(run.seed)
    history_loss, history_top1, num_train = [], [], 0
    run.backbone.train()
    run.head.train()
    for epoch in range(epochs):
        order = rows[torch.randperm(len(rows), generator=generator).numpy()]
        batches = [sorted(order[begin : begin + batch_size].tolist()) for begin in range(0, len(order), batch_size)]
        epoch_lrs = lrs[epoch * len(batches) : (epoch + 1) * len(batches)]
        loss_sum, correct, seen = _train_epoch(run, source, batches, epoch_lrs, epoch, f"{epoch + 1}/{epochs}")
        if seen == 0:
            raise ValueError("No readable training image (or fewer than two per batch): nothing to fine-tune on.")
        history_loss.append(loss_sum / seen)
        history_top1.append(correct / seen)
        num_train = seen
    return history_loss, history_top1, num_train


def _train_epoch(
    run: _FineTuning, source: ImageSource, batches: list[list[int]], lrs: list[float], epoch: int, count: str
) -> tuple[float, int, int]:
    """One pass over `batches` (dataset rows); returns the summed loss, the correct predictions and the images."""
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(batches, desc=f"fine-tune epoch {count}", leave=False)
    for batch, lr in zip(bar, lrs):
        images, kept, labels = _read(source, batch, run.label_column)
        for group in run.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        if len(images) < 2:  # nothing (or a single image: BatchNorm backbones) to train on
            continue
        loss, logits, labels = _train_step(run, images, kept, labels, epoch)
        loss_sum += loss.item() * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
    return loss_sum, correct, seen


def _train_step(
    run: _FineTuning, images: list[Tensor], kept: list[int], labels: Tensor, epoch: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One AdamW step on the augmented batch; returns the loss, the logits and the labels (on the device)."""
    _check_labels(labels, run.num_classes)
    rngs = [np.random.default_rng((run.seed, epoch, row)) for row in kept]
    pixels, labels = _augment(images, rngs, run.view).to(run.device), labels.to(run.device)
    logits = run.logits(pixels)
    loss = nn.functional.cross_entropy(logits, labels, label_smoothing=run.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return loss, logits, labels


@torch.no_grad()
def _predict(run: _FineTuning, source: ImageSource, max_images: int | None) -> tuple[Tensor, Tensor]:
    """Logits and labels of the readable images among the first `max_images` rows (None: all), evaluation view only."""
    run.backbone.eval()
    run.head.eval()
    num_rows = len(source.dataset)
    if max_images is not None:
        num_rows = min(num_rows, max_images)
    scores, targets = [], []
    for begin in tqdm(range(0, num_rows, 256), desc="fine-tune test", leave=False):
        images, _, labels = _read(source, list(range(begin, min(begin + 256, num_rows))), run.label_column)
        if not images:
            continue
        scores.append(run.logits(run.view(images)["pixel_values"].to(run.device)).float().cpu())
        targets.append(labels)
        _check_labels(labels, run.num_classes)
    if not scores:
        raise ValueError("No readable test image: nothing to score the fine-tuned model on.")
    return torch.cat(scores), torch.cat(targets)
