"""`--resume_from_checkpoint`: which settings a resumed run must keep, and which may change on the way.

A checkpoint continues the run that wrote it: the same method, model, data, batch and seed, so that the resumed run is
the run its `args.json` and model card describe. Changing one of those is refused by name. Settings that only steer
the rest of the run (`max_steps`, learning rate and clipping after a loss spike, save / eval / logging frequency,
precision, trackers) may change; the changes are logged and recorded under `resumes` in `args.json`.
"""

import json
import logging
from pathlib import Path
from typing import Any

from .init_from import comparable_config


logger = logging.getLogger(__name__)

RUN_RECORD = "training_args.json"  # the run's args.json, copied into every checkpoint

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
