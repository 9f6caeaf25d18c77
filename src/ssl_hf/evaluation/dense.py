"""Dense patch probe: a per-patch linear classifier on frozen patch tokens, scored as semantic segmentation.

Each patch token is classified on its own (`LinearProbe`: BatchNorm without affine + linear) against the majority
class of its patch (`patch_labels`), then the patch predictions are upsampled to pixels (nearest: a patch's class
fills its `patch_size` x `patch_size` pixels) and compared with the full-resolution segmentation: mean IoU, pixel
accuracy and patch accuracy. This is the linear-segmentation probe used to compare DINO and SelfPatch features on
dense tasks, reduced to a cheap protocol on cached tokens. The mean IoU and pixel accuracy come from the `evaluate`
metric `mean_iou` shipped with the package (`metric_loading.load_metric`, offline).
"""

import math

import datasets
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from ..data.builtin import BACKGROUND_CLASS, patch_labels
from ..data.datasets import ImageSource
from .linear_probe import train_linear_probe
from .metric_loading import load_metric


SEGMENTATION_COLUMN = "segmentation"


def dense_probe(
    train_tokens: Tensor,
    train_seg: Tensor,
    test_tokens: Tensor,
    test_seg: Tensor,
    patch_size: int,
    image_size: int,
    *,
    epochs: int = 10,
    batch_size: int = 1024,
    base_lr: float = 0.1,
    momentum: float = 0.9,
    warmup_epochs: int = 1,
    num_classes: int | None = None,
    seed: int = 0,
) -> dict:
    """Trains a per-patch `LinearProbe` on frozen patch tokens and scores it as semantic segmentation.

    Training: SGD (momentum, no weight decay) over all training patches shuffled together, `lr = base_lr *
    batch_size / 256`, linear warm-up then cosine decay per step; targets are the patch majority classes
    (`patch_labels`, the background is a class like the others).

    Args:
        train_tokens: `(N, L, D)` patch tokens (no cls token), `L = (image_size // patch_size) ** 2`, row-major.
        train_seg: `(N, image_size * image_size)` or `(N, image_size, image_size)` integer class maps.
        test_tokens: `(M, L, D)`.
        test_seg: `(M, image_size * image_size)` or `(M, image_size, image_size)`.
        patch_size: Patch side in pixels.
        image_size: Side of the (square) images the tokens were computed from and of the segmentation maps.
        epochs: Passes over the training patches.
        batch_size: Patches per step.
        base_lr: Learning rate for a batch of 256.
        momentum: SGD momentum.
        warmup_epochs: Linear warm-up length.
        num_classes: Number of classes; defaults to `max(BACKGROUND_CLASS, largest class id) + 1` (11 on
            `digit-scenes`).
        seed: Seed of the head initialisation and the shuffling.

    Returns:
        `mean_iou` (percent, over the classes present in the test prediction or ground truth), `pixel_accuracy` and
        `patch_accuracy` (percent; patches against their majority class), `per_class_iou` (percent per class id,
        None for a class absent from both prediction and ground truth), `num_classes`, `num_train_patches`,
        `num_test_patches`.

    Raises:
        ValueError: If the token grid, the segmentation size, `image_size` and `patch_size` do not agree.
    """
    train_seg = _check(train_tokens, train_seg, patch_size, image_size, "train")
    test_seg = _check(test_tokens, test_seg, patch_size, image_size, "test")
    train_y, test_y = (
        torch.cat([patch_labels(s, patch_size) for s in seg.split(256)]) for seg in (train_seg, test_seg)
    )
    if num_classes is None:
        num_classes = max(BACKGROUND_CLASS, int(train_seg.max()), int(test_seg.max())) + 1
    dim = train_tokens.shape[-1]
    x, y = train_tokens.reshape(-1, dim).float(), train_y.reshape(-1)

    probe = train_linear_probe(x, y, num_classes, epochs, batch_size, base_lr, momentum, warmup_epochs, seed)
    with torch.no_grad():
        pred = torch.cat([probe(t.float()).argmax(1) for t in test_tokens.reshape(-1, dim).split(65536)])
    pred = pred.view(test_y.shape)  # (M, L)
    grid = image_size // patch_size
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for p, s in zip(pred.split(256), test_seg.split(256)):
        pixels = p.view(-1, grid, grid).repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
        confusion += confusion_matrix(pixels, s, num_classes)
    metrics = iou_metrics(confusion)
    return {
        "mean_iou": metrics["mean_iou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "patch_accuracy": 100.0 * (pred == test_y).double().mean().item(),
        "per_class_iou": metrics["per_class_iou"],
        "num_classes": num_classes,
        "num_train_patches": len(x),
        "num_test_patches": pred.numel(),
    }


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """`(C, C)` int64 counts: row = ground-truth class, column = predicted class, over all elements."""
    target, pred = target.reshape(-1).long(), pred.reshape(-1).long()
    if target.numel() and (int(target.max()) >= num_classes or int(pred.max()) >= num_classes):
        raise ValueError(f"Class ids must be < num_classes={num_classes}")
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def iou_metrics(confusion: Tensor) -> dict:
    """Intersection over union per class, its mean and the pixel accuracy of a confusion matrix (percent).

    `IoU_c = TP_c / (TP_c + FP_c + FN_c)` with `TP_c = confusion[c, c]`, `FN_c` the rest of row `c` (ground truth c)
    and `FP_c` the rest of column `c` (predicted c). The mean runs over the classes present in the ground truth or the
    prediction; the others get None in `per_class_iou`.

    Computed by the shipped `evaluate` metric `mean_iou` (`load_metric`), with the pixels grouped: one
    `(predicted class, true class, count)` row per non-zero cell (the metric's `counts` configuration), so the cost
    does not grow with the number of pixels.

    Returns:
        `mean_iou`, `pixel_accuracy` (floats in [0, 100]) and `per_class_iou` (one float or None per class).
    """
    confusion = confusion.cpu()
    true, pred = confusion.nonzero(as_tuple=True)
    return load_metric("mean_iou", "counts").compute(
        predictions=pred.numpy(),
        references=true.numpy(),
        counts=confusion[true, pred].numpy(),
        num_classes=confusion.shape[0],
    )


def check_dense_backbone(model: PreTrainedModel) -> None:
    """Raises a `ValueError` unless the model is a token backbone (a `patch_size` in its config)."""
    if getattr(model.config, "patch_size", None) is None:
        raise ValueError(
            f"The dense protocol needs a transformer backbone with patch tokens (ViT, DINOv2, SigLIP); "
            f"{type(model).__name__} ({model.config.model_type}) has none: CNNs such as ResNet are not supported."
        )


def backbone_patch_size(model: PreTrainedModel) -> int:
    """The patch side of a token backbone, in pixels."""
    size = model.config.patch_size
    return int(size if isinstance(size, int) else size[0])


def check_segmentation(ds: datasets.Dataset, where: str) -> None:
    """Raises a `ValueError` suggesting `--dataset digit-scenes` unless `ds` has a `segmentation` column."""
    if SEGMENTATION_COLUMN not in ds.column_names:
        raise ValueError(
            f"{where} has no '{SEGMENTATION_COLUMN}' column (columns: {ds.column_names}): the dense protocol needs "
            "per-pixel class maps. Use the built-in set with them: --dataset digit-scenes."
        )
    if isinstance(ds.features[SEGMENTATION_COLUMN], datasets.Image):
        raise ValueError(
            f"{where}: column '{SEGMENTATION_COLUMN}' holds mask images; the dense protocol reads square class maps "
            "stored as integer lists (flattened H*W), as in --dataset digit-scenes."
        )


def segmentation_maps(source: ImageSource, rows: Tensor, image_size: int, desc: str) -> Tensor:
    """The segmentation maps of `rows` at the view size `(N, image_size * image_size)` (nearest resize).

    Args:
        source: A split with a `segmentation` column (`check_segmentation`).
        rows: Dataset rows of the images whose patch tokens were kept (`extract_patch_features`).
        image_size: Side of the evaluation view.
        desc: Names the split in errors.
    """
    table = source.dataset.with_format("arrow")[rows.tolist()]
    values = table.column(SEGMENTATION_COLUMN).combine_chunks()
    while isinstance(values, pa.ListArray | pa.LargeListArray | pa.FixedSizeListArray):  # (N, H*W) or (N, H, W)
        values = values.flatten()
    flat = values.to_numpy(zero_copy_only=False)
    if len(rows) == 0 or flat.size % len(rows):
        raise ValueError(f"{desc}: the '{SEGMENTATION_COLUMN}' rows do not all hold the same number of pixels.")
    seg = torch.from_numpy(flat.reshape(len(rows), -1).copy())  # arrow buffers are read-only
    return resize_segmentation(seg, image_size)


def resize_segmentation(segmentation: Tensor, image_size: int) -> Tensor:
    """Resizes square class maps `(N, H*W)` or `(N, H, W)` to `(N, image_size * image_size)` (nearest neighbour).

    Used to align a dataset's native-resolution segmentation with images resized by the evaluation view.
    """
    seg = torch.as_tensor(segmentation)
    if len(seg) == 0:
        return seg.reshape(0, image_size * image_size)
    seg = seg.reshape(len(seg), -1)
    side = math.isqrt(seg.shape[1])
    if side * side != seg.shape[1]:
        raise ValueError(f"Segmentation rows of {seg.shape[1]} values are not square class maps.")
    if side == image_size:
        return seg
    size = (image_size, image_size)
    resized = [F.interpolate(c.view(-1, 1, side, side).float(), size=size, mode="nearest") for c in seg.split(256)]
    return torch.cat(resized).to(seg.dtype).reshape(len(seg), -1)


def _check(tokens: Tensor, seg: Tensor, patch_size: int, image_size: int, split: str) -> Tensor:
    """Validates one split's shapes; returns the segmentation as `(N, image_size * image_size)`."""
    if patch_size <= 0 or image_size % patch_size:
        raise ValueError(f"patch_size {patch_size} must divide image_size {image_size}.")
    grid = image_size // patch_size
    if tokens.ndim != 3 or tokens.shape[1] != grid * grid:
        got = f"{tokens.shape[1]} tokens" if tokens.ndim == 3 else f"a {tokens.ndim}-D tensor"
        raise ValueError(
            f"{split}: the backbone gives {got} per image but image_size {image_size} // patch_size {patch_size} = "
            f"{grid} means a {grid}x{grid} grid of {grid * grid} patch tokens."
        )
    seg = torch.as_tensor(seg)
    if len(seg) != len(tokens):
        raise ValueError(f"{split}: {len(tokens)} token rows but {len(seg)} segmentation maps.")
    if len(seg) == 0:
        raise ValueError(f"{split}: no images to probe on.")
    if seg[0].numel() != image_size * image_size:
        raise ValueError(
            f"{split}: segmentation maps hold {seg[0].numel()} pixels, not image_size {image_size} squared "
            f"({image_size * image_size}): the {grid}x{grid} patch grid (patch {patch_size}) does not match them."
        )
    return seg.reshape(len(seg), -1)
