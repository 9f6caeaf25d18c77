"""The labelled train and test splits of an evaluation: two named splits, or a seeded hold-out of the train split.

Class names given as text (`"cat"`, `"dog"`) become class ids with one mapping for both splits (sorted names).
"""

import dataclasses

import datasets

from ..data.datasets import ImageSource, MissingSplitError, load_image_source


def labelled_splits(
    dataset: str,
    train_split: str,
    test_split: str,
    label_column: str,
    image_column: str | None,
    test_fraction: float | None,
    seed: int,
) -> tuple[ImageSource, ImageSource]:
    """Opens the train and test images of `dataset` with integer labels.

    Args:
        dataset: Built-in name, Hub id, folder, files (`load_image_source`).
        train_split: The training split.
        test_split: The test split (unused with `test_fraction`).
        label_column: The class column; text class names are encoded (`encode_text_labels`).
        image_column: The image column (found automatically when None).
        test_fraction: Hold out this fraction of `train_split` as the test set instead (for datasets without a test
            split): a shuffle seeded by `seed`, the same for every backbone evaluated with that seed.
        seed: Seed of the hold-out.

    Raises:
        ValueError: `test_fraction` outside (0, 1), or no `test_split` (the message offers `--test_fraction`).
    """
    train = load_image_source(dataset, train_split, image_column=image_column)
    if test_fraction is not None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"--test_fraction must be in (0, 1), e.g. 0.2; got {test_fraction}.")
        (train,) = encode_text_labels([train], label_column)  # one mapping, before the split
        parts = train.dataset.train_test_split(test_size=test_fraction, seed=seed)
        return _with(train, parts["train"]), _with(train, parts["test"])
    try:
        test = load_image_source(dataset, test_split, image_column=image_column)
    except MissingSplitError as err:
        raise ValueError(
            f"{err} Hold out part of '{train_split}' as the test set with --test_fraction 0.2 (seeded by --seed), "
            "or name the test split with --test_split."
        ) from err
    train, test = encode_text_labels([train, test], label_column)
    return train, test


def held_out_name(train_split: str, test_fraction: float, seed: int) -> str:
    """How results name a hold-out test set, e.g. `0.2 of train (seed 0)`."""
    return f"{test_fraction:g} of {train_split} (seed {seed})"


def encode_text_labels(sources: list[ImageSource], label_column: str) -> list[ImageSource]:
    """Casts a text label column to `ClassLabel` with the sorted class names of all `sources`; others pass through."""
    feature = sources[0].dataset.features.get(label_column)
    if not isinstance(feature, datasets.Value) or feature.dtype not in ("string", "large_string"):
        return sources
    names = sorted({name for s in sources for name in s.dataset.unique(label_column) if name is not None})
    return [_with(s, s.dataset.cast_column(label_column, datasets.ClassLabel(names=names))) for s in sources]


def _with(source: ImageSource, dataset: datasets.Dataset) -> ImageSource:
    return dataclasses.replace(source, dataset=dataset, _arrow=None)
