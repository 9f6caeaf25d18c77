"""Image datasets from a hub name, a local folder, parquet/arrow files or the built-in sets, as raw uint8 images.

Every image is converted to RGB; files that cannot be decoded are skipped and counted, never crash a run (D5).
"""

import ast
import hashlib
import io
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .builtin import PIXELS_COLUMN, builtin_image_size, is_builtin, load_builtin


logger = logging.getLogger(__name__)

_IMAGE_COLUMN_NAMES = ("image", "img", "images", "picture", "pixel_values")
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # `save_to_disk` folders
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass
class ImageSource:
    """A dataset split plus how to read its images.

    Attributes:
        dataset: The HF dataset (map-style or iterable); image column not decoded by `datasets`.
        image_column: Name of the image column.
        raw_size: Side of the square raw-uint8 images of a built-in set (None for encoded images).
    """

    dataset: datasets.Dataset | datasets.IterableDataset
    image_column: str
    raw_size: int | None = None
    _arrow: datasets.Dataset | None = field(default=None, repr=False)

    def decode(self, values: Sequence, failures: list[list[str]] | None = None) -> list[Tensor | None]:
        """Decodes a batch of column values to `(3, H, W)` uint8 tensors; None where a file is unreadable.

        Args:
            values: Column values (encoded images, paths, or raw pixels of a built-in set).
            failures: If given, receives `[file, reason]` per unreadable image instead of a logged warning.
        """
        if self.raw_size is not None:
            arr = np.array(values, dtype=np.uint8).reshape(-1, self.raw_size, self.raw_size, 3)
            return list(torch.from_numpy(arr).permute(0, 3, 1, 2))
        return [decode_image(v, failures) for v in values]

    def read(
        self, rows: slice | Sequence[int], columns: Sequence[str] = (), failures: list[list[str]] | None = None
    ) -> tuple[list[Tensor | None], dict]:
        """Reads rows of a map-style dataset through Arrow: decoded images plus other columns as numpy arrays.

        `failures` is passed to `decode`.
        """
        if self._arrow is None:
            self._arrow = self.dataset.with_format("arrow")
        table = self._arrow[rows if isinstance(rows, slice) else list(rows)]
        column = table.column(self.image_column)
        if self.raw_size is not None:  # fixed-length uint8 lists: one flat buffer
            values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        else:
            values = column.to_pylist()
        return self.decode(values, failures), {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def load_image_source(
    name_or_path: str | datasets.Dataset | datasets.DatasetDict,
    split: str = "train",
    *,
    config_name: str | None = None,
    image_column: str | None = None,
    streaming: bool = False,
    builtin_size: int = 32,
    builtin_seed: int = 0,
    cache_dir: str | None = None,
) -> ImageSource:
    """Opens a split of an image dataset.

    Args:
        name_or_path: A built-in name (`digits`, `digit-scenes`), a Hub dataset id, a folder of images
            (`imagefolder`), a folder written by `Dataset.save_to_disk`, parquet/arrow/csv/json file(s)
            (comma-separated or a glob), or an in-memory `datasets.Dataset` (used whatever `split` says) or
            `DatasetDict` (its `split`).
        split: Split to read.
        config_name: Hub dataset configuration.
        image_column: Column holding the images; found automatically when None.
        streaming: Read lazily as an `IterableDataset` (data that does not fit on disk or in memory).
        builtin_size: Image side for the built-in sets.
        builtin_seed: Rendering seed for the built-in sets.
        cache_dir: `datasets` cache directory.
    """
    if isinstance(name_or_path, datasets.Dataset | datasets.DatasetDict):
        ds = _in_memory_split(name_or_path, split)
        ds = ds.to_iterable_dataset() if streaming else ds
        name_or_path = describe_dataset(name_or_path)
    elif is_builtin(name_or_path):
        ds = load_builtin(name_or_path, split, image_size=builtin_size, seed=builtin_seed)
        return ImageSource(ds, PIXELS_COLUMN, builtin_image_size(ds))
    else:
        ds = _load(name_or_path, split, config_name, streaming, cache_dir)
    features = ds.features
    column = image_column or _find_image_column(features, name_or_path)
    if features is not None and column not in features:
        raise ValueError(
            f"Image column '{column}' not found in {name_or_path}; columns are {list(features)}. "
            "Pass the right one with --image_column."
        )
    if features is not None:
        _check_image_column(ds, features, column, name_or_path)
    raw_size = _raw_pixels_size(features[column]) if features is not None else None
    if raw_size:  # a built-in set written to parquet/arrow/disk: fixed-length uint8 RGB pixels
        return ImageSource(ds, column, raw_size)
    if features is not None and isinstance(features[column], datasets.Image):
        # decode ourselves so that one corrupt file is skipped instead of killing the run
        ds = ds.cast_column(column, datasets.Image(decode=False))
    if not streaming and len(ds) == 0:
        raise ValueError(_empty(split, name_or_path))
    return ImageSource(ds, column)


class MissingSplitError(ValueError):
    """The dataset has no split of that name.

    Attributes:
        name: The dataset.
        split: The split asked for.
        available: The splits it has.
    """

    def __init__(self, name: str, split: str, available: list[str]):
        self.name, self.split, self.available = name, split, list(available)
        super().__init__(f"{name} has no split '{split}'; its splits are: {', '.join(self.available)}.")


def describe_dataset(dataset: str | datasets.Dataset | datasets.DatasetDict) -> str:
    """A name or path as is; an in-memory dataset as its type, size and fingerprint (what a run record keeps)."""
    if isinstance(dataset, datasets.DatasetDict):
        sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.items())
        prints = ", ".join(split._fingerprint for split in dataset.values())
        return f"in-memory DatasetDict ({sizes} rows, fingerprints {prints})"
    if isinstance(dataset, datasets.Dataset):
        return f"in-memory Dataset ({len(dataset)} rows, fingerprint {dataset._fingerprint})"
    return dataset


def _in_memory_split(dataset: datasets.Dataset | datasets.DatasetDict, split: str) -> datasets.Dataset:
    if isinstance(dataset, datasets.Dataset):
        return dataset
    if split not in dataset:
        raise MissingSplitError("The in-memory DatasetDict", split, list(dataset))
    return dataset[split]


def _empty(split: str, name_or_path: str) -> str:
    return f"Split '{split}' of {name_or_path} is empty: there is nothing to train or evaluate on."


def _load(name_or_path: str, split: str, config_name: str | None, streaming: bool, cache_dir: str | None):
    path = Path(name_or_path)
    try:
        if path.is_dir() and any((path / f).exists() for f in _SAVED_MARKERS):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict) and split not in loaded:
                raise MissingSplitError(name_or_path, split, list(loaded))
            ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            return ds.to_iterable_dataset() if streaming else ds
        if path.is_dir():
            return datasets.load_dataset(
                "imagefolder", data_dir=str(path), split=split, streaming=streaming, cache_dir=cache_dir
            )
        suffix = Path(name_or_path.split(",")[0]).suffix.lower()
        if suffix in _FILE_BUILDERS:
            files = name_or_path.split(",")
            return datasets.load_dataset(
                _FILE_BUILDERS[suffix],
                data_files={split: files},
                split=split,
                streaming=streaming,
                cache_dir=cache_dir,
            )
        return datasets.load_dataset(name_or_path, config_name, split=split, streaming=streaming, cache_dir=cache_dir)
    except IndexError as err:  # `load_from_disk` cannot reopen a dataset saved with 0 rows (0 shards)
        raise ValueError(_empty(split, name_or_path)) from err
    except MissingSplitError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        if "corresponds to no data" in str(err):  # `load_dataset` on files with 0 rows
            raise ValueError(_empty(split, name_or_path)) from err
        unknown = re.fullmatch(r'Unknown split "(.*)"\. Should be one of (\[.*\])\.', str(err))
        if unknown:  # `load_dataset`'s wording
            raise MissingSplitError(name_or_path, split, ast.literal_eval(unknown.group(2))) from err
        offline = " (the Hub is unreachable or HF_HUB_OFFLINE is set)" if "offline" in str(err).lower() else ""
        raise ValueError(
            f"Could not load dataset '{name_or_path}' split '{split}'{offline}: {err}. Give a built-in name "
            "(digits, digit-scenes), a Hub id, a folder of images, or parquet/arrow files."
        ) from err


def _raw_pixels_size(feature) -> int | None:
    """Side of square raw RGB images stored as a fixed-length uint8 list (the built-in sets' format), else None."""
    length = getattr(feature, "length", -1)
    inner = getattr(feature, "feature", None)
    if length <= 0 or getattr(inner, "dtype", None) != "uint8":
        return None
    side = math.isqrt(length // 3)
    return side if 3 * side * side == length else None


def _holds_images(feature) -> bool:
    """True for columns whose type can only hold images: `Image`, raw uint8 pixels, bytes, `{bytes, path}` structs."""
    if isinstance(feature, datasets.Image) or _raw_pixels_size(feature):
        return True
    if isinstance(feature, dict):
        return bool({"bytes", "path"} & set(feature))
    return getattr(feature, "dtype", None) in ("binary", "large_binary")


def _check_image_column(ds, features: datasets.Features, column: str, name: str) -> None:
    """Refuses, before any training, an image column that holds text or numbers; names the columns that hold images.

    A text column passes when its first value looks like an image path (image suffix or an existing file).
    """
    feature = features[column]
    if _holds_images(feature):
        return
    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        first = next(iter(ds.select_columns([column])), {}).get(column)
        if not first or Path(first).suffix.lower() in Image.registered_extensions() or os.path.isfile(first):
            return  # paths of image files
        holds = f"text (first value {first[:60]!r}), not images or image paths"
    else:
        holds = f"{dtype or type(feature).__name__} values, not images"
    images = [k for k, f in features.items() if _holds_images(f)]
    fix = (
        f"Use --image_column {images[0]}" + (f" (columns with images: {', '.join(images)})" if len(images) > 1 else "")
        if images
        else f"No column holds images (columns: {', '.join(features)}); give a dataset of images"
    )
    raise ValueError(f"Image column '{column}' of {name} holds {holds}. {fix}.")


def _find_image_column(features: datasets.Features | None, name: str) -> str:
    if features is None:  # some streaming datasets do not declare features
        return "image"
    image_columns = [k for k, f in features.items() if isinstance(f, datasets.Image)]
    if image_columns:
        return image_columns[0]
    for candidate in (*_IMAGE_COLUMN_NAMES, PIXELS_COLUMN):
        if candidate in features:
            return candidate
    raise ValueError(f"No image column found in {name}: columns are {list(features)}. Name it with --image_column.")


def decode_image(value, failures: list[list[str]] | None = None) -> Tensor | None:
    """Decodes one image (PIL image, `{"bytes", "path"}` dict, bytes or path) to a `(3, H, W)` uint8 tensor.

    Grayscale, palette, RGBA (composited on white), CMYK and 16-bit images are converted to 8-bit RGB.
    Returns None when the file is missing, corrupt or truncated, and logs a warning naming it, or, when `failures` is
    given, appends `[file, reason]` to it (the training loop warns once per file, across workers and epochs).
    """
    try:
        if isinstance(value, Image.Image):
            image = value
        else:
            if isinstance(value, dict):
                data, path = value.get("bytes"), value.get("path")
            elif isinstance(value, bytes | bytearray):
                data, path = value, None
            else:
                data, path = None, os.fspath(value)
            image = Image.open(io.BytesIO(data) if data is not None else path)
        image.load()
        # one copy, to a writable CHW array (torch warns on read-only PIL buffers)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(to_rgb(image)).transpose(2, 0, 1)))
    except (OSError, ValueError, SyntaxError, TypeError) as err:
        if failures is None:
            logger.warning("Skipping unreadable image %s: %s", image_name(value), err)
        else:
            failures.append([image_name(value), str(err)])
        return None


def image_name(value) -> str:
    """The path of an image column value, else `<N bytes, sha1 ...>` (the same name for the same bytes)."""
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str | Path) else None
    if path:
        return str(path)
    data = value.get("bytes") if isinstance(value, dict) else value
    if isinstance(data, bytes | bytearray):
        return f"<{len(data)} bytes, sha1 {hashlib.sha1(data).hexdigest()[:12]}>"
    return f"<{type(value).__name__}>"


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB (16-bit and float images are rescaled, alpha is composited on white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB") if image.mode != "RGB" else image
