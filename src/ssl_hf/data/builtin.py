"""Offline built-in image datasets rendered from scikit-learn's 8x8 handwritten digits.

Two datasets are provided, both cached as Hugging Face ``datasets`` on disk:

* ``"digits"`` (iconic): one coloured, rescaled digit per image, column ``label``.
* ``"digit-scenes"`` (non-iconic): 2-5 overlapping digits of distinct classes per image, multi-hot
  ``labels`` and a per-pixel ``segmentation`` (class 10 = background).

Images are stored as raw HWC ``uint8`` bytes in the ``pixels`` column (see
:func:`decode_pixels`); the image size is recorded as JSON in ``ds.info.description``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F


logger = logging.getLogger(__name__)

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "digit-scenes")
PIXELS_COLUMN = "pixels"
BACKGROUND_CLASS = 10
_SPLITS = ("train", "test")
_VERSION = 1
_NUM_SOURCES = 1797
_DEFAULT_NUM_SCENES = {"train": 8000, "test": 2000}
_NOISE_STD = 8 / 255
_SEG_THRESHOLD = 0.25


def is_builtin(name: str) -> bool:
    """Return whether ``name`` is one of :data:`BUILTIN_DATASETS`."""
    return name in BUILTIN_DATASETS


@functools.lru_cache(maxsize=1)
def _sources() -> tuple[np.ndarray, np.ndarray]:
    """Load the scikit-learn digits as ``(images (N, 8, 8) float32 in [0, 16], labels (N,))``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def _source_split() -> tuple[np.ndarray, np.ndarray]:
    """Return the fixed 80/20 (train, test) split of source digit indices (seed 0)."""
    perm = np.random.default_rng(0).permutation(_NUM_SOURCES)
    n_train = round(0.8 * _NUM_SOURCES)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def _scaled(size: int, image_size: int) -> int:
    return round(size * image_size / 32)


def _alpha_canvas(rng: np.random.Generator, sources: np.ndarray, lo: int, hi: int, image_size: int) -> np.ndarray:
    """Resize each 8x8 source to a random size in ``[lo, hi]`` and place it fully inside an empty canvas.

    Returns:
        ``(n, image_size, image_size)`` float32 alpha in [0, 1] (each sprite scaled by its max).
    """
    sizes = rng.integers(lo, hi + 1, size=len(sources))
    ys, xs = rng.integers(0, image_size - sizes + 1), rng.integers(0, image_size - sizes + 1)
    out = np.zeros((len(sources), image_size, image_size), dtype=np.float32)
    for size in np.unique(sizes):
        idx = np.nonzero(sizes == size)[0]
        src = torch.from_numpy(sources[idx]).unsqueeze(1)
        sprite = F.interpolate(src, size=(int(size), int(size)), mode="bilinear", align_corners=False)
        sprite = sprite.squeeze(1).numpy()
        sprite /= np.maximum(sprite.max(axis=(1, 2), keepdims=True), 1e-6)
        offs = np.arange(size)
        rows = ys[idx, None, None] + offs[None, :, None]
        cols = xs[idx, None, None] + offs[None, None, :]
        out[idx[:, None, None], rows, cols] = np.clip(sprite, 0.0, 1.0)
    return out


def _background(rng: np.random.Generator, n: int, image_size: int) -> np.ndarray:
    """Random dark-ish uniform base colour per image, ``(n, H, W, 3)`` float32."""
    base = rng.uniform(0.0, 0.3, size=(n, 1, 1, 3)).astype(np.float32)
    return np.broadcast_to(base, (n, image_size, image_size, 3)).copy()


def _paint(img: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Alpha-blend a random bright-ish colour per image over ``img`` using ``alpha``."""
    colour = rng.uniform(0.55, 1.0, size=(len(img), 1, 1, 3)).astype(np.float32)
    a = alpha[..., None]
    return img * (1.0 - a) + colour * a


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add small Gaussian noise and flatten to ``(n, H*W*3)`` uint8."""
    img += _NOISE_STD * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8).reshape(len(img), -1)


def _render_digits(split: str, image_size: int, seed: int, renders: int) -> dict:
    rng = np.random.default_rng([seed, 0, _SPLITS.index(split)])
    images, labels = _sources()
    src = np.tile(_source_split()[_SPLITS.index(split)], renders)
    alpha = _alpha_canvas(rng, images[src], _scaled(14, image_size), _scaled(28, image_size), image_size)
    img = _paint(_background(rng, len(src), image_size), alpha, rng)
    return {PIXELS_COLUMN: _finish(rng, img), "label": labels[src]}


def _render_scenes(split: str, image_size: int, seed: int, num_scenes: int) -> dict:
    rng = np.random.default_rng([seed, 1, _SPLITS.index(split)])
    images, labels = _sources()
    pool = _source_split()[_SPLITS.index(split)]
    pool = pool[np.argsort(labels[pool], kind="stable")]  # grouped by class
    per_class = np.bincount(labels[pool], minlength=10)
    starts = np.cumsum(per_class) - per_class
    counts = rng.integers(2, 6, size=num_scenes)
    classes = np.argsort(rng.random((num_scenes, 10)), axis=1)  # distinct classes per scene
    img = _background(rng, num_scenes, image_size)
    seg = np.full((num_scenes, image_size, image_size), BACKGROUND_CLASS, dtype=np.uint8)
    multi_hot = np.zeros((num_scenes, 10), dtype=np.int8)
    lo, hi = _scaled(8, image_size), _scaled(20, image_size)
    for layer in range(counts.max()):
        rows = np.nonzero(counts > layer)[0]
        cls = classes[rows, layer]
        src = pool[starts[cls] + (rng.random(len(rows)) * per_class[cls]).astype(np.int64)]
        alpha = _alpha_canvas(rng, images[src], lo, hi, image_size)
        img[rows] = _paint(img[rows], alpha, rng)
        seg[rows] = np.where(alpha > _SEG_THRESHOLD, cls[:, None, None].astype(np.uint8), seg[rows])
        multi_hot[rows, cls] = 1
    return {PIXELS_COLUMN: _finish(rng, img), "labels": multi_hot, "segmentation": seg.reshape(num_scenes, -1)}


def _features(name: str, image_size: int) -> datasets.Features:
    cols = {PIXELS_COLUMN: datasets.Sequence(datasets.Value("uint8"), length=image_size * image_size * 3)}
    if name == "digits":
        cols["label"] = datasets.ClassLabel(names=[str(i) for i in range(10)])
    else:
        cols["labels"] = datasets.Sequence(datasets.Value("int8"), length=10)
        cols["segmentation"] = datasets.Sequence(datasets.Value("uint8"), length=image_size * image_size)
    return datasets.Features(cols)


def _to_arrow(array: np.ndarray) -> pa.Array:
    """Zero-copy numpy -> Arrow (2-D arrays become fixed-size lists; far faster than lists)."""
    if array.ndim == 1:
        return pa.array(array)
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Temporarily disable ``datasets`` progress bars."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def load_builtin(
    name: str,
    split: str = "train",
    *,
    image_size: int = 32,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    renders_per_image: int = 5,
    num_scenes: int | None = None,
) -> datasets.Dataset:
    """Load (building and caching on first use) a built-in digits dataset.

    Args:
        name: One of :data:`BUILTIN_DATASETS` (``"digits"`` or ``"digit-scenes"``).
        split: ``"train"`` or ``"test"``; the source digits are split 80/20 (seed 0), so no
            source image appears in both splits.
        image_size: Side length of the square RGB images (>= 16).
        seed: Seed of the rendering randomness (the source split is always seed 0).
        cache_dir: Cache root; defaults to ``$SSL_HF_CACHE`` or ``~/.cache/ssl_hf``.
        renders_per_image: Renders per source image (``"digits"`` only).
        num_scenes: Number of scenes (``"digit-scenes"`` only); default 8000 train / 2000 test.

    Returns:
        The dataset, with a ``pixels`` column of raw HWC uint8 bytes and ``label``
        (``"digits"``) or ``labels`` + ``segmentation`` (``"digit-scenes"``) columns.

    Raises:
        ValueError: If ``name``, ``split`` or ``image_size`` is invalid.
    """
    if not is_builtin(name):
        raise ValueError(f"Unknown builtin dataset {name!r}; valid choices: {', '.join(BUILTIN_DATASETS)}")
    if split not in _SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid choices: {', '.join(_SPLITS)}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    root = Path(cache_dir or os.environ.get("SSL_HF_CACHE") or Path.home() / ".cache" / "ssl_hf").expanduser()
    key = f"{name}-s{image_size}-seed{seed}-r{renders_per_image}-n{num_scenes}-v{_VERSION}"
    target = root / "builtin" / key / split
    if target.is_dir():
        return datasets.load_from_disk(str(target))

    start = time.perf_counter()
    if name == "digits":
        columns = _render_digits(split, image_size, seed, renders_per_image)
    else:
        columns = _render_scenes(split, image_size, seed, num_scenes or _DEFAULT_NUM_SCENES[split])
    meta = {"ssl_hf_builtin": name, "image_size": image_size, "seed": seed, "split": split, "version": _VERSION}
    features = _features(name, image_size)
    info = datasets.DatasetInfo(description=json.dumps(meta), features=features)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{split}-tmp-", dir=target.parent)
    try:
        with _quiet_progress():
            ds = datasets.Dataset.from_dict(
                {k: _to_arrow(v) for k, v in columns.items()}, features=features, info=info, split=split
            )
            ds.save_to_disk(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            logger.debug("%s was built concurrently by another process; using it", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Built %s/%s (%d rows) in %.2fs at %s", name, split, len(ds), time.perf_counter() - start, target)
    return datasets.load_from_disk(str(target))


def builtin_image_size(ds: datasets.Dataset) -> int | None:
    """Return the image size recorded by :func:`load_builtin`, or ``None`` for other datasets."""
    try:
        meta = json.loads(ds.info.description or "")
        return int(meta["image_size"]) if "ssl_hf_builtin" in meta else None
    except (ValueError, TypeError, KeyError):
        return None


def decode_pixels(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Reshape raw ``pixels`` rows ``(..., H*W*3)`` into images ``(..., H, W, 3)`` uint8.

    Any integer dtype is accepted (``ds.with_format("numpy")`` yields int64 unless
    ``dtype=np.uint8`` is passed) and cast to uint8.

    Raises:
        ValueError: If the last dimension is not ``image_size * image_size * 3``.
    """
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.shape[-1] != image_size * image_size * 3:
        raise ValueError(f"pixels last dim {pixels.shape[-1]} != {image_size}*{image_size}*3")
    return pixels.reshape(*pixels.shape[:-1], image_size, image_size, 3)


def patch_labels(segmentation: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Majority class of each ``patch_size`` x ``patch_size`` patch of a segmentation map.

    Args:
        segmentation: ``(B, H, W)`` or ``(B, H*W)`` integer class map with square ``H == W``.
        patch_size: Patch side length; must divide ``H``.

    Returns:
        ``(B, L)`` long tensor, ``L = (H / patch_size) ** 2`` in row-major patch order. The
        background counts as a class; ties go to the smallest class id.

    Raises:
        ValueError: If the map is not square or ``patch_size`` does not divide its side.
    """
    seg = torch.as_tensor(segmentation).long()
    b, side = seg.shape[0], math.isqrt(seg[0].numel())
    if seg.dim() not in (2, 3) or side * side != seg[0].numel() or (seg.dim() == 3 and seg.shape[1] != side):
        raise ValueError(f"segmentation must be (B, H, W) or (B, H*W) with square H == W, got {tuple(seg.shape)}")
    seg = seg.reshape(b, side, side)
    if patch_size <= 0 or side % patch_size:
        raise ValueError(f"patch_size {patch_size} must divide the image size {side}")
    g = side // patch_size
    patches = seg.reshape(b, g, patch_size, g, patch_size).permute(0, 1, 3, 2, 4).reshape(b, g * g, -1)
    num_classes = max(BACKGROUND_CLASS, int(seg.max()) if seg.numel() else 0) + 1
    counts = torch.zeros(b, g * g, num_classes, dtype=torch.long)
    counts.scatter_add_(2, patches, torch.ones_like(patches))
    return counts.argmax(dim=2)  # first maximum -> smallest class id on ties
