"""The random-init floor: calibrating a backbone's untrained twin and naming it in result rows."""

import yaml
from transformers import PreTrainedModel

from ..data.datasets import ImageSource, load_image_source
from ..data.views import EvalView
from .cache import source_key
from .features import batchnorm_layers, calibrate_batchnorm


def calibrate_twin(
    model: PreTrainedModel,
    view: EvalView,
    twin: dict,
    dataset: str,
    train_split: str,
    image_column: str | None,
    max_images: int | None,
    batch_size: int,
    seed: int,
    train: ImageSource | None = None,
) -> dict:
    """Estimates a random-init twin's BatchNorm statistics on training images of `dataset` (`calibrate_batchnorm`).

    Adds `bn_calibration_images` to `twin` (`load_random_init`'s description) and, when it calibrated, the data's
    identity for the feature cache; returns the fields of the twin's result rows: `floor`, `floor_init` and
    `bn_calibration_images`.
    """
    twin["bn_calibration_images"] = 0
    if batchnorm_layers(model):  # statistics of real images, not the mean 0 / variance 1 of a fresh build
        if train is None:
            train = load_image_source(dataset, train_split, image_column=image_column)
        twin["bn_calibration_images"] = calibrate_batchnorm(model, train, view, max_images, batch_size, seed)
        twin["bn_calibration_data"] = [source_key(train, dataset, train_split), max_images]
    label = {"floor": floor_label(twin, dataset, train_split)}
    return label | {key: twin[key] for key in ("floor_init", "bn_calibration_images")}


def floor_label(floor: dict, dataset: str, split: str = "train") -> str:
    """What a random-init twin is, for result rows and printouts.

    Args:
        floor: `load_random_init`'s description of the twin, plus `bn_calibration_images`.
        dataset: Dataset the BatchNorm statistics come from.
        split: Its split.

    Returns:
        E.g. "MAE init at step 0, seed 0" or "random init (transformers), seed 0, BN statistics from 2048 digits
        train images".
    """
    from ..cards import CARDS_DIR

    if floor["floor_init"] == "method":
        card = CARDS_DIR / f"{floor['floor_method']}.yaml"
        title = yaml.safe_load(card.read_text()).get("method_title", "") if card.is_file() else ""
        text = f"{title.split(' (')[0] or floor['floor_method']} init at step 0, seed {floor['floor_seed']}"
    else:
        text = f"random init (transformers), seed {floor['floor_seed']}"
    images = floor.get("bn_calibration_images")
    return text + (f", BN statistics from {images} {dataset} {split} images" if images else "")
