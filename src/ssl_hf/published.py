"""What an export publishes: names and records without this machine's paths, results merged over evaluations.

An export folder is what `ssl-hf push` uploads. Its `training_args.json`, `eval_results.json` and card say what the
run and its evaluations were in terms that mean something elsewhere (Hub ids, built-in names, the last part of a
local path); the run's full record stays in the run folder (`args.json`, which resuming compares) and, when the
export's copy differs, in the export's hidden `LOCAL_RECORD` (not uploaded), from which the random-init floor is
rebuilt (`evaluation.features.load_random_init`: `--init_from` folders, TEC's local base model).
"""

import json
import os
import re
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id

from .data.builtin import is_builtin


RESULTS_FILE = "eval_results.json"  # the rows the export's card shows, merged over `ssl-hf evaluate --update_card`
LOCAL_RECORD = ".training_args.local.json"  # the run record with its local paths; hidden: `ssl-hf push` skips it
PLOTS = "plots"  # diagnostics plots inside an export, linked from its card
DEFAULT_LICENSE = "apache-2.0"
# a Hub licence id: SPDX-style, lower case (apache-2.0, mit, cc-by-nc-sa-4.0, openrail++, llama3.1, other)
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
_FILE_SUFFIXES = (".parquet", ".arrow", ".csv", ".json", ".jsonl")


def hub_id(name: str | None) -> str | None:
    """Returns `name` when it reads as a Hub repo id (`namespace/name`), else None.

    None for ssl_hf's built-in datasets (`digits`, `digit-scenes`), existing local paths, absolute or relative paths
    (`/x`, `./x`, `a/b/c`), data files (`x/y.parquet`) and names without a namespace. A relative two-part path that
    does not exist on this machine cannot be told apart from a Hub id and is taken as one.

    Args:
        name: A dataset or model name, path or Hub id (anything else gives None).

    Returns:
        `name` or None.
    """
    if not isinstance(name, str) or name.count("/") != 1 or is_builtin(name):
        return None
    if name.startswith((".", "~")) or name.lower().endswith(_FILE_SUFFIXES):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return None if Path(name).exists() else name


def published_name(name: str | None) -> str | None:
    """A dataset or model name as it reads elsewhere, e.g. `/data/cats` -> `cats`.

    Built-in names, Hub ids and bare names stay as they are; a local path gives its last part (each of
    comma-separated data files).
    """
    if not isinstance(name, str) or not name or is_builtin(name) or hub_id(name):
        return name
    return ",".join(Path(part).name or part for part in name.split(","))


def published_record(record: dict) -> dict:
    """A run record (`training_args.json`) without local paths: what an export publishes.

    `training.dataset`, `eval_dataset`, `init_from` and TEC's `model_config.base_model` become `published_name`s,
    `output_dir` and checkpoint folders their last part, and any other absolute path its last part.
    """

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value

    out = json.loads(json.dumps(record, default=str))
    training, config = out.get("training") or {}, out.get("model_config") or {}
    for fields, keys in ((training, ("dataset", "eval_dataset", "init_from")), (config, ("base_model",))):
        for key in keys:
            if fields.get(key):
                fields[key] = published_name(fields[key])
    for key in ("output_dir", "resume_from_checkpoint"):  # `latest` stays
        if training.get(key):
            training[key] = Path(training[key]).name
    for resume in out.get("resumes") or []:
        if isinstance(resume, dict) and isinstance(resume.get("checkpoint"), str):
            resume["checkpoint"] = Path(resume["checkpoint"]).name
    return strip(out)


def published_rows(results: dict | None, export_dir: str | os.PathLike) -> list[dict]:
    """The result rows of `ssl-hf evaluate` JSON as an export publishes them.

    Without the `model` path; `dataset` and `floor_init_from` as `published_name`s (also inside the `floor` label);
    `plots` relative to the export (`plots/<file>`) when they were written into its `plots/` folder, else dropped
    (the card cannot link them).
    """
    plots_dir = (Path(export_dir) / PLOTS).resolve()
    out = []
    for row in result_rows(results):
        row = {k: v for k, v in row.items() if k != "model"}  # the local folder that was evaluated
        raw = row.get("dataset")
        for key in ("dataset", "floor_init_from"):
            if isinstance(row.get(key), str):
                row[key] = published_name(row[key])
        if isinstance(row.get("floor"), str) and isinstance(raw, str) and raw:
            row["floor"] = row["floor"].replace(raw, row["dataset"])
        if isinstance(row.get("plots"), dict):
            plots = {
                name: f"{PLOTS}/{Path(path).name}"
                for name, path in row["plots"].items()
                # written by `ssl-hf evaluate` (relative to where it ran) or already relative to the export
                if plots_dir in {Path(path).resolve().parent, (Path(export_dir) / path).resolve().parent}
            }
            row = {k: v for k, v in row.items() if k != "plots"} | ({"plots": plots} if plots else {})
        out.append(row)
    return out


def result_rows(results: dict | None) -> list[dict]:
    """The rows of `ssl-hf evaluate` JSON (`{"results": [...]}`, or a single row); `[]` for None."""
    if not results:
        return []
    rows = results.get("results", [results])
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def result_key(row: dict) -> tuple:
    """What a new result replaces: the row of the same protocol, backbone and dataset (and few-shot setting)."""
    return (row.get("protocol"), str(row.get("backbone", "pretrained")), row.get("dataset"), row.get("shots"))


def merged_results(previous: list[dict], new: list[dict]) -> list[dict]:
    """`previous` rows with each replaced by the `new` row of the same `result_key` (in place); other new rows follow."""
    merged = {result_key(row): row for row in previous}
    merged.update((result_key(row), row) for row in new)
    return list(merged.values())


def stored_results(export_dir: str | os.PathLike) -> list[dict]:
    """The rows of an export's `RESULTS_FILE` (`[]` without one)."""
    path = Path(export_dir) / RESULTS_FILE
    if not path.is_file():
        return []
    rows = json.loads(path.read_text()).get("results")
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def store_results(export_dir: str | os.PathLike, rows: list[dict]) -> None:
    """Writes `rows` to the export's `RESULTS_FILE` (removes it when there is none)."""
    path = Path(export_dir) / RESULTS_FILE
    if rows:
        path.write_text(json.dumps({"results": rows}, indent=2) + "\n")
    else:
        path.unlink(missing_ok=True)


def linked_plots(rows: list[dict]) -> set[str]:
    """File names in the export's `plots/` folder that `rows` link."""
    return {
        Path(path).name
        for row in rows
        for path in (row.get("plots") or {}).values()
        if Path(path).parent.name == PLOTS
    }


def remove_plots(export_dir: str | os.PathLike, names: set[str]) -> None:
    """Deletes these files of the export's `plots/` folder, and the folder once it is empty."""
    folder = Path(export_dir) / PLOTS
    for name in names:
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def license_id(value: str | None) -> str | None:
    """A licence for the card's metadata: a Hub / SPDX-style id, lower-cased (`Apache-2.0` -> `apache-2.0`).

    Raises:
        ValueError: For anything else (spaces, a URL, a full licence name), naming the form expected.
    """
    if value is None:
        return None
    if not _LICENSE.fullmatch(value.strip().lower()):
        raise ValueError(
            f"--license {value!r} is not a licence id. Give the Hub's id of the licence, SPDX-style: apache-2.0, mit, "
            "bsd-3-clause, cc-by-4.0, cc-by-nc-4.0, openrail, llama3.1, ... or other (the list: "
            "https://huggingface.co/docs/hub/repositories-licenses)."
        )
    return value.strip().lower()
