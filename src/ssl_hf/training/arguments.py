"""Training arguments: data, optimiser, schedule, precision and I/O. No model hyper-parameters (those are configs)."""

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Literal

import datasets


def _arg(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainingArguments:
    """Everything about a pre-training run that is not the model.

    `None` means "use the method's paper default" (`MethodSpec.training_defaults`) for the fields that have one.
    """

    # data
    dataset: str | datasets.Dataset | datasets.DatasetDict = _arg(  # noqa: RUF009 (_arg is a dataclasses.field)
        "digit-scenes",
        "Built-in name, Hub dataset id, image folder, or parquet/arrow file(s); in Python also an in-memory "
        "datasets.Dataset, or a DatasetDict (its train_split).",
    )
    dataset_config: str | None = _arg(None, "Hub dataset configuration name.")
    train_split: str = _arg("train", "Split to pre-train on.")
    image_column: str | None = _arg(None, "Image column (found automatically when omitted).")
    streaming: bool = _arg(False, "Stream the dataset instead of downloading/caching it whole.")
    crop_min_scale: float | None = _arg(
        None, "Smallest random-resized-crop area of the (global) views (method default when omitted)."
    )
    hflip: bool | None = _arg(None, "Random horizontal flip (p 0.5) of the training views (default: on).")
    blur_prob: str | None = _arg(
        None,
        "Gaussian-blur probability per view, comma-separated, cycled over the views (BYOL '1.0,0.1'; multi-crop: "
        "global 1, global 2, local crops, DINO '1.0,0.1,0.5'). Method default when omitted.",
    )
    solarize_prob: str | None = _arg(
        None, "Solarisation probability per view, comma-separated as blur_prob (BYOL '0.0,0.2'; DINO '0.0,0.2,0.0')."
    )
    num_workers: int = _arg(0, "DataLoader workers (0 is fastest for small images on few cores).")
    channel_permute_prob: float | None = _arg(
        None,
        "Probability of a random RGB channel order per colour view (off when omitted): removes colour as a way to "
        "match two views when colours identify an image, as in the built-in sets.",
    )
    # schedule
    max_steps: int | None = _arg(None, "Optimiser steps to run (None: 1000, or what num_train_epochs gives).")
    num_train_epochs: float | None = _arg(
        None,
        "Passes over the dataset, turned into max_steps from its length and the global batch (logged); not for "
        "streaming datasets. With max_steps too, both must give the same number of steps.",
    )
    batch_size: int = _arg(64, "Images per device per micro-batch.")
    gradient_accumulation_steps: int = _arg(1, "Micro-batches per optimiser step.")
    learning_rate: float | None = _arg(None, "Absolute peak lr; overrides base_learning_rate scaling.")
    base_learning_rate: float | None = _arg(None, "Peak lr = base_learning_rate * global_batch / 256.")
    min_learning_rate: float = _arg(0.0, "Final lr of the cosine schedule.")
    warmup_steps: int | None = _arg(None, "Linear warm-up steps (overrides warmup_ratio).")
    warmup_ratio: float | None = _arg(None, "Warm-up as a fraction of max_steps.")
    # optimiser
    optimizer: Literal["adamw", "lars"] | None = _arg(
        None, "adamw (fused where available) or lars (BYOL-style: no decay or adaptation on biases and norms)."
    )
    momentum: float = _arg(0.9, "LARS momentum.")
    weight_decay: float | None = _arg(None, "Weight decay (never on biases, norms, tokens, position tables).")
    adam_beta1: float = _arg(0.9, "AdamW beta1.")
    adam_beta2: float | None = _arg(None, "AdamW beta2.")
    lars_trust_coefficient: float | None = _arg(
        None,
        "LARS trust coefficient eta: each adapted tensor moves by about lr * eta * its norm per step (BYOL 1e-3).",
    )
    weight_decay_end: float | None = _arg(
        None, "Final weight decay of a cosine schedule from weight_decay (DINO: 0.04 -> 0.4); constant when omitted."
    )
    max_grad_norm: float | None = _arg(None, "Clip gradient norms to this value (off when omitted).")
    clip_per_tensor: bool | None = _arg(
        None, "Clip each parameter tensor's gradient norm separately (DINO) instead of the global norm."
    )
    # precision / speed
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = _arg(
        "no",
        "Autocast precision: no, bf16, fp16 (GPU only), or auto (CPU: time a few steps in fp32 and bf16 and keep the "
        "faster; GPU: bf16 where supported).",
    )
    torch_compile: bool = _arg(False, "torch.compile the model (slow first steps).")
    cpu_keep_freed_memory: bool = _arg(
        True, "On CPU (glibc), keep freed memory for reuse: large activations are not page-faulted in every step."
    )
    seed: int = _arg(0, "Seed for init, shuffling, augmentation and masking.")
    # I/O
    output_dir: str = _arg("runs/ssl_hf", "Run directory: checkpoints/, final/, metrics.jsonl, args.json.")
    save_steps: int = _arg(500, "Save a resumable checkpoint every N optimiser steps (and at the end).")
    save_total_limit: int | None = _arg(2, "Keep only the newest N checkpoints (None: keep all).")
    resume_from_checkpoint: str | None = _arg(None, "'latest' or a checkpoint directory to continue from.")
    init_from: str | None = _arg(
        None,
        "Start a new run from a saved pre-training model of the same method (a run's final/ folder or `ssl-hf "
        "convert --full` output): its config and all its weights and buffers (decoder, teacher, heads, centre); "
        "optimiser and schedules restart at step 0. Method and backbone config flags are refused (the config is "
        "DIR's); not with --resume_from_checkpoint of an existing run. Recorded as an absolute path.",
    )
    logging_steps: int = _arg(
        1,
        "Write metrics.jsonl, the trackers and the progress bar every N optimiser steps, losses averaged over those "
        "steps (also at the last step and whenever the online k-NN is measured).",
    )
    report_to: str | None = _arg(None, "Accelerate tracker(s), e.g. tensorboard, wandb (comma-separated).")
    # online monitoring
    eval_every: int = _arg(
        0, "Every N optimiser steps (and at the start and end), log an online weighted k-NN top-1 (0: off)."
    )
    eval_dataset: str | datasets.DatasetDict = _arg(  # noqa: RUF009 (_arg is a dataclasses.field)
        "digits", "Labelled dataset of the online k-NN (its train and test splits; in Python also a DatasetDict)."
    )
    eval_label_column: str = _arg("label", "Integer label column of eval_dataset.")
    eval_max_images: int | None = _arg(
        5000, "Use at most this many images of each split of eval_dataset for the online k-NN (None: all)."
    )
    alarms: bool = _arg(True, "Log collapse statistics every step and warn once when one trips (see the docs).")

    def resolved(self, defaults: dict[str, Any]) -> "TrainingArguments":
        """Returns a copy where unset (`None`) fields take the method's defaults, then the generic ones."""
        generic = {
            "optimizer": "adamw",
            "base_learning_rate": 1e-3,
            "weight_decay": 0.05,
            "adam_beta2": 0.999,
            "warmup_ratio": 0.05,
            "lars_trust_coefficient": 1e-3,
            "clip_per_tensor": False,
        }
        if self.num_train_epochs is None:
            generic["max_steps"] = 1000  # else the loop takes max_steps from the epochs and the dataset's length
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                value = defaults.get(f.name, generic.get(f.name))
            values[f.name] = value
        return TrainingArguments(**values)

    def validate(self) -> None:
        """Raises `ValueError` naming the bad field and a fix."""
        checks = [
            (self.max_steps is None or self.max_steps > 0, "max_steps must be > 0"),
            (self.num_train_epochs is None or self.num_train_epochs > 0, "num_train_epochs must be > 0"),
            (
                self.num_train_epochs is None or not self.streaming,
                "num_train_epochs needs the number of images, and a streaming dataset has no length; give max_steps",
            ),
            (self.logging_steps > 0, "logging_steps must be > 0"),
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.gradient_accumulation_steps > 0, "gradient_accumulation_steps must be > 0"),
            (self.save_steps > 0, "save_steps must be > 0"),
            (
                self.mixed_precision in ("no", "bf16", "fp16", "auto"),
                "mixed_precision must be one of no, bf16, fp16, auto",
            ),
            (
                self.channel_permute_prob is None or 0 <= self.channel_permute_prob <= 1,
                "channel_permute_prob must be in [0, 1]",
            ),
            (self.eval_every >= 0, "eval_every must be >= 0 (0 turns the online k-NN off)"),
            (self.eval_max_images is None or self.eval_max_images > 0, "eval_max_images must be > 0"),
            (
                self.lars_trust_coefficient is None or self.lars_trust_coefficient > 0,
                "lars_trust_coefficient must be > 0",
            ),
            (self.optimizer in ("adamw", "lars"), "optimizer must be 'adamw' or 'lars'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Invalid training arguments: {message}.")
        for name in ("blur_prob", "solarize_prob"):
            per_view_probabilities(getattr(self, name), name)
        check_trackers(self.report_to)
        if isinstance(self.eval_dataset, datasets.Dataset):
            raise ValueError(
                "Invalid training arguments: eval_dataset needs a train and a test split, and a Dataset is one split: "
                "give a DatasetDict, e.g. dataset.train_test_split(test_size=0.2, seed=0)."
            )

    def build_views(self, spec, model_config):
        """The training views of a run: the method's view preset (`spec.views`) with this run's view switches."""
        from ..data.views import build_views

        return build_views(
            spec.views,
            model_config,
            scale=(self.crop_min_scale, 1.0) if self.crop_min_scale else None,
            hflip=self.hflip,
            blur_prob=per_view_probabilities(self.blur_prob, "blur_prob"),
            solarize_prob=per_view_probabilities(self.solarize_prob, "solarize_prob"),
            channel_permute_prob=self.channel_permute_prob,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable); an in-memory dataset is recorded by its size and fingerprint."""
        from ..data.datasets import describe_dataset

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {
            **values,
            "dataset": describe_dataset(self.dataset),
            "eval_dataset": describe_dataset(self.eval_dataset),
        }


# `report_to` trackers (Accelerate's): the modules that provide one, and how to install them
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'ssl_hf[tensorboard]'"),
    "wandb": (("wandb",), "pip install 'ssl_hf[wandb]'"),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "comet_ml": (("comet_ml",), "pip install comet_ml"),
    "aim": (("aim",), "pip install 'aim<4'"),
    "clearml": (("clearml",), "pip install clearml"),
    "dvclive": (("dvclive",), "pip install dvclive"),
    "swanlab": (("swanlab",), "pip install swanlab"),
    "trackio": (("trackio",), "pip install trackio"),
}


def check_trackers(report_to: str | None) -> None:
    """Raises `ValueError`, before any training, for an unknown tracker or one whose package is not installed.

    Accelerate would only warn and log nothing. `all` (every installed tracker) is accepted as is.
    """
    for name in (t.strip() for t in (report_to or "").split(",") if t.strip()):
        if name == "all":
            continue
        if name not in TRACKERS:
            raise ValueError(
                f"Invalid training arguments: unknown tracker '{name}' in report_to; choose from all, "
                f"{', '.join(TRACKERS)}."
            )
        modules, install = TRACKERS[name]
        if not any(importlib.util.find_spec(m) for m in modules):
            raise ValueError(
                f"--report_to {name} needs the {modules[0]} package, which is not installed (nothing would be logged). "
                f"Install it with: {install}"
            )


def per_view_probabilities(value: str | float | list | tuple | None, name: str = "value") -> tuple[float, ...] | None:
    """`"1.0,0.1"`, `0.5` or `[1.0, 0.1]` -> `(1.0, 0.1)`; None stays None. Raises naming `name` when malformed."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        probs = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid training arguments: {name}={value!r} must be comma-separated probabilities."
        ) from None
    if not probs or not all(0 <= p <= 1 for p in probs):
        raise ValueError(f"Invalid training arguments: {name}={value!r} must hold probabilities in [0, 1].")
    return probs


TRAINING_FIELDS = {f.name: f for f in dataclasses.fields(TrainingArguments)}
