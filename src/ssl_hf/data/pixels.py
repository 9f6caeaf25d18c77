"""Pixel primitives every view shares: ImageNet normalisation, random-resized crop boxes, batched resized crops.

Images are uint8 `(3, H, W)` tensors as decoded; views are float `(B, 3, S, S)` batches.
"""

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_resized_box(
    rng: np.random.Generator, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """Samples a crop box `(top, left, h, w)` as torchvision's `RandomResizedCrop.get_params`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height  # fallback: central crop at the closest allowed aspect ratio
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@lru_cache(maxsize=1024)
def _resize_matrix(length: int, size: int) -> Tensor:
    """`(size, length)` matrix `M` such that `M @ v` is `F.interpolate(v, size, bicubic, antialias=True)` of a 1-D `v`.

    Bicubic resizing is linear and separable, so resizing the identity gives its matrix.
    """
    eye = torch.eye(length).view(length, 1, 1, length)
    resized = F.interpolate(eye, size=(1, size), mode="bicubic", antialias=True, align_corners=False)
    return resized.view(length, size).T.contiguous()


def resized_crops(images: Sequence[Tensor], boxes: Sequence[tuple], flips: Sequence[bool], size: int) -> Tensor:
    """Crops each image to its box, resizes to `size` x `size` (bicubic, antialiased) and flips.

    Equivalent to `F.interpolate(crop, (size, size), mode="bicubic", antialias=True)` on each crop (border pixels
    clamped inside the box, as torchvision), computed as one batched `Wy @ image @ Wx^T` per image shape with cached
    row/column resize matrices. A sample's view depends on its own image and box only.

    Returns:
        `(B, 3, S, S)` in [0, 1].
    """
    out = torch.empty(len(images), 3, size, size)
    by_shape: dict[tuple, list[int]] = {}
    for k, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(k)
    for shape, ks in by_shape.items():
        H, W = shape[-2:]
        rows, cols = torch.zeros(len(ks), 1, size, H), torch.zeros(len(ks), 1, size, W)
        for i, k in enumerate(ks):
            top, left, h, w = boxes[k]
            rows[i, 0, :, top : top + h] = _resize_matrix(h, size)
            col = _resize_matrix(w, size)
            cols[i, 0, :, left : left + w] = col.flip(0) if flips[k] else col  # flipped output = reversed columns
        batch = torch.stack([images[k] for k in ks]).float().div_(255)  # (b, 3, H, W)
        out[ks] = rows @ batch @ cols.transpose(-1, -2)
    return out.clamp_(0, 1)


def normalize(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Standardises `(B, 3, H, W)` pixels in [0, 1] with per-channel mean/std."""
    return (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
