"""What a run saves, read back: resuming from a checkpoint, exporting one, and telling either from an export.

A checkpoint continues the run that wrote it: the same method, model, data, batch and seed, so that the resumed run is
the run its `args.json` and model card describe. Changing one of those is refused by name. Settings that only steer
the rest of the run (`max_steps`, learning rate and clipping after a loss spike, save / eval / logging frequency,
precision, trackers) may change; the changes are logged and recorded under `resumes` in `args.json`.
"""

import json
import logging
from pathlib import Path
from typing import Any

from transformers import AutoModelForPreTraining, PreTrainedModel

from ..registry import METHODS, get_method
from .init_from import comparable_config


logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"  # RUN/checkpoints/step_<N>: Accelerate state + META + RUN_RECORD
META = "ssl_hf_state.json"  # the loop's state (step, epoch, ...) of a checkpoint
RUN_RECORD = "training_args.json"  # the run's args.json, copied into every checkpoint and into final/

# `TrainingArguments` fields that decide which images the run sees, in which order and how augmented, and the
# optimiser whose state the checkpoint holds
KEPT_ON_RESUME = (
    "dataset",
    "dataset_config",
    "train_split",
    "image_column",
    "streaming",
    "batch_size",
    "gradient_accumulation_steps",
    "seed",
    "optimizer",
    "crop_min_scale",
    "hflip",
    "blur_prob",
    "solarize_prob",
    "channel_permute_prob",
)
_BOOKKEEPING = ("output_dir", "resume_from_checkpoint")


def saved_run_record(checkpoint: Path) -> dict | None:
    """The `args.json` of the run that wrote `checkpoint`: its own copy, else its run folder's; None if neither."""
    for path in (checkpoint / RUN_RECORD, checkpoint.parent.parent / "args.json"):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def check_resume(checkpoint: Path, record: dict) -> list[dict[str, Any]]:
    """Compares the run record of a resume (`loop._run_record`) with the one of the run that wrote `checkpoint`.

    Args:
        checkpoint: The `checkpoints/step_<N>` folder to continue from.
        record: The resumed run's record (method, model config, resolved training arguments, derived values).

    Returns:
        The run's resumes for its new record: the saved run's, then this one with its allowed changes
        (`{"checkpoint": path, "changed": {field: [before, now]}}`).

    Raises:
        ValueError: The method, the model config, the number of processes or a `KEPT_ON_RESUME` field differs; the
            message names each change and the two ways out.
    """
    saved = saved_run_record(checkpoint)
    if saved is None:
        logger.warning("%s has no record of its run's settings: resuming without checking them.", checkpoint)
        return [{"checkpoint": str(checkpoint), "changed": "unknown (no record)"}]
    saved = json.loads(json.dumps(saved, default=str))
    record = json.loads(json.dumps(record, default=str))  # tuples and paths compare as saved
    refused = []
    if saved["method"] != record["method"]:
        refused.append(f"method {saved['method']} -> {record['method']}")
    else:
        before, now = comparable_config(saved["model_config"]), comparable_config(record["model_config"])
        refused += [
            f"{k} {before.get(k)} -> {now.get(k)}"
            for k in sorted(before.keys() | now.keys())
            if before.get(k) != now.get(k)
        ]
    processes = (saved.get("derived", {}).get("num_processes"), record["derived"].get("num_processes"))
    if processes[0] is not None and processes[0] != processes[1]:
        refused.append(f"num_processes {processes[0]} -> {processes[1]}")
    before, now = saved["training"], record["training"]
    changed = {k: [before.get(k), now[k]] for k in now if k not in _BOOKKEEPING and before.get(k, now[k]) != now[k]}
    refused += [f"{k} {changed[k][0]} -> {changed[k][1]}" for k in KEPT_ON_RESUME if k in changed]
    if refused:
        shown = ", ".join(refused[:8]) + (f" and {len(refused) - 8} more" if len(refused) > 8 else "")
        raise ValueError(
            f"Cannot resume from {checkpoint}: the run that wrote it used other settings ({shown}; before -> now). "
            f"Resume with that run's settings (recorded in {checkpoint / RUN_RECORD}), or start a new run with "
            "another --output_dir."
        )
    if changed:
        logger.warning(
            "Resuming from %s with changed settings (recorded in args.json): %s",
            checkpoint,
            ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()),
        )
    return [*saved.get("resumes", []), {"checkpoint": str(checkpoint), "changed": changed}]


def pretraining_folder(path: str | Path) -> str | None:
    """What a local folder of a run is: `checkpoint` (`checkpoints/step_<N>`), `model` (a saved `<M>ForPreTraining`).

    Returns None for anything else: an encoder export, a Hub id, a missing folder.
    """
    path = Path(path)
    if (path / META).is_file():
        return "checkpoint"
    config = path / "config.json"
    if config.is_file():
        architectures = json.loads(config.read_text()).get("architectures") or []
        if {spec.model_class.__name__ for spec in METHODS.values()} & set(architectures):
            return "model"
    return None


def export_first(path: str | Path, command: str) -> str | None:
    """The error for `ssl-hf <command> PATH` when PATH is a pre-training folder, with the export command; else None."""
    kind = pretraining_folder(path)
    if kind is None:
        return None
    path = Path(path)
    run = path.parent.parent if kind == "checkpoint" else path.parent
    suggested = run / ("export" if kind == "model" else f"export_{path.name}")
    what = (
        "a training checkpoint"
        if kind == "checkpoint"
        else "a pre-training model (it loads only after `import ssl_hf`)"
    )
    return (
        f"{path} is {what}, not an encoder export; {command} takes an export. Export first: "
        f"ssl-hf export {path} --output_dir {suggested}"
    )


def load_pretraining_folder(path: str | Path) -> tuple[PreTrainedModel, dict | None]:
    """The `<M>ForPreTraining` of a run's `final/` or `checkpoints/step_<N>` folder, with its run record.

    `final/` may be any `save_pretrained` folder of a pre-training model. The run record is its `training_args.json`
    (None when not recorded); a checkpoint's also says the step it was saved at (`derived.checkpoint_step`).

    Raises:
        FileNotFoundError: The folder is neither.
    """
    import safetensors.torch

    path = Path(path)
    if (path / "config.json").is_file():
        record = json.loads((path / RUN_RECORD).read_text()) if (path / RUN_RECORD).is_file() else None
        return AutoModelForPreTraining.from_pretrained(path), record
    if pretraining_folder(path) != "checkpoint":
        raise FileNotFoundError(
            f"{path} has no config.json: give the `final/` folder of a run, one of its {CHECKPOINTS}/step_<N> "
            "folders, or any save_pretrained folder."
        )
    record = saved_run_record(path)
    if record is None:
        raise FileNotFoundError(
            f"{path} is a checkpoint without a record of its run ({RUN_RECORD} here or args.json in the run folder): "
            "its model cannot be rebuilt. Export the run's final/ folder instead."
        )
    spec = get_method(record["method"])
    model = spec.model_class(spec.config_class.from_dict(record["model_config"]))
    safetensors.torch.load_model(
        model, path / "model.safetensors"
    )  # strict; tensors shared in the model are saved once
    step = json.loads((path / META).read_text())["state"]["step"]
    record = {**record, "derived": {**record.get("derived", {}), "checkpoint_step": step}}
    return model, record
