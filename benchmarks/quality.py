"""Does every method learn? Pre-train each with its CPU preset, probe the export next to its calibrated floor.

For each dataset, method and seed:
1. `ssl-hf pretrain --method M --preset M-cpu --dataset DATASET --seed S --output_dir WORK/DATASET/M/seedS` in a
   subprocess (wall clock measured; a run whose `final/` exists is reused, an interrupted one resumes). TEC first
   makes sure the MAE run of the same dataset and seed exists and learns from its export (`--base_model`).
2. Export the encoder (`ssl_hf.export.export_pretrained`, as `ssl-hf export RUN/final --output_dir RUN/export`).
3. k-NN (k = 20, T = 0.07) and linear probe on `digits` (test split) with the method's `feature_pool`, for the export
   and for its calibrated floor (`evaluate_backbone(..., random_init=True)`: the run's own encoder at step 0, its
   BatchNorm statistics estimated on the training images).
4. Write `benchmarks/results/quality/<dataset>/<method>_seed<S>.json` at once and redraw the online k-NN curves
   (`knn_curves_<dataset>.png`), so methods and seeds can run in separate sittings.

`benchmarks/results/quality/raw_pixels.json` (k-NN and linear probe on the evaluation view's pixels) is computed once.
`python benchmarks/report.py` then renders the README tables (`report_quality.py`). A result whose recipe (command,
preset fields, evaluation dataset, probe epochs) did not change is not evaluated again (delete the file to re-evaluate).

    python benchmarks/quality.py --methods mae,asl,tec,byol,msbreg,dino,selfpatch --seeds 0,1
    python benchmarks/quality.py --methods byol --seeds 0 --max_steps 50 --results /tmp/look  # a quick look

Result file (accuracies in percent; paths relative to the work dir): method, seed, dataset, eval_dataset, preset and
preset_fields, max_steps_override, extra, command, run_dir, base_model (TEC), steps, images_seen, wall_seconds (the
pre-training subprocess), train_seconds (optimiser steps only, from metrics.jsonl), knn_seconds (online k-NN),
images_per_sec (median), mixed_precision, final_loss, knn_floor, knn_curve [[step, top-1]], pool, probe_epochs,
evaluation (rows of the export, `backbone: pretrained`, and of its floor, `backbone: random_init` with the `floor`
label), machine and versions.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

import ssl_hf
from ssl_hf.data.datasets import load_image_source
from ssl_hf.data.views import EvalView
from ssl_hf.evaluation import evaluate_backbone
from ssl_hf.evaluation.knn import knn_accuracy
from ssl_hf.evaluation.linear_probe import linear_probe_accuracy
from ssl_hf.export import export_pretrained
from ssl_hf.training.curves import read_metrics


sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_quality import METHODS, write_curves
from speed import cpu_name


RESULTS = Path(__file__).resolve().parent / "results" / "quality"
PROTOCOLS = ("knn", "linear")
IMAGE_SIZE = 32  # every CPU preset trains and evaluates at 32 px: the raw-pixel floor uses the same view
ROW_FIELDS = ("protocol", "backbone", "floor", "floor_init", "bn_calibration_images", "pool", "settings")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--dataset", default="digit-scenes", help="pre-training dataset(s), comma-separated")
    parser.add_argument("--workdir", default="/tmp/ssl_hf_quality", help="runs and exports")
    parser.add_argument("--max_steps", type=int, help="override the preset's step count (quick looks, smoke tests)")
    parser.add_argument("--extra", default="", help='more `ssl-hf pretrain` flags, e.g. "--batch_size 32"')
    parser.add_argument("--eval_dataset", default="digits", help="labelled dataset of the probes")
    parser.add_argument("--probe_epochs", type=int, default=100, help="linear-probe epochs")
    parser.add_argument("--results", default=str(RESULTS), help="where result files and PNGs go")
    args = parser.parse_args(argv)
    args.workdir, args.results = Path(args.workdir).resolve(), Path(args.results)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.datasets = [d.strip() for d in args.dataset.split(",")]
    return args


def relative(text: str, workdir: Path) -> str:
    """`text` with the work dir's absolute path removed (result files must not carry local paths)."""
    return text.replace(f"{workdir}{os.sep}", "")


def run_dir(args, dataset: str, method: str, seed: int) -> Path:
    suffix = f"-steps{args.max_steps}" if args.max_steps else ""
    return args.workdir / dataset / method / f"seed{seed}{suffix}"


def pretrain_flags(args, dataset: str, method: str, seed: int, base_model: Path | None) -> list[str]:
    flags = ["--method", method, "--preset", f"{method}-cpu", "--dataset", dataset, "--seed", str(seed)]
    flags += ["--output_dir", str(run_dir(args, dataset, method, seed))]
    if base_model is not None:
        flags += ["--base_model", str(base_model)]
    if args.max_steps:
        flags += ["--max_steps", str(args.max_steps)]
    return [*flags, "--resume_from_checkpoint", "latest", *shlex.split(args.extra)]


def launch(flags: list[str], log: Path) -> None:
    """`ssl-hf pretrain FLAGS` in a fresh process, output appended to `log`."""
    with log.open("a") as f:
        done = subprocess.run([sys.executable, "-m", "ssl_hf.cli", "pretrain", *flags], stdout=f, stderr=f)
    if done.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"ssl-hf pretrain {shlex.join(flags)} failed (exit {done.returncode}); log {log}:\n{tail}")


def export(run: Path) -> Path:
    """`RUN/export` (written once from `RUN/final`)."""
    out = run / "export"
    if not (out / "config.json").is_file():
        export_pretrained(run / "final", out)
    return out


def pretrain(args, dataset: str, method: str, seed: int) -> tuple[Path, dict]:
    """Runs (or reuses) a pre-training run; returns its directory and `{"flags", "wall_seconds"}`.

    Raises:
        SystemExit: When the run fails, or a finished run in the work dir was made with other flags.
    """
    base = export(pretrain(args, dataset, "mae", seed)[0]) if method == "tec" else None
    run = run_dir(args, dataset, method, seed)
    flags = pretrain_flags(args, dataset, method, seed, base)
    preset = preset_fields(method)
    record = run / "quality_run.json"
    if (run / "final").is_dir():
        info = json.loads(record.read_text()) if record.is_file() else {"flags": flags, "wall_seconds": None}
        if info["flags"] != flags or info.get("preset_fields", preset) != preset:
            raise SystemExit(
                f"{run} holds a finished run made with other flags ({shlex.join(info['flags'])}) or another version "
                f"of the {method}-cpu preset; remove it or choose another --workdir"
            )
        return run, info
    run.mkdir(parents=True, exist_ok=True)
    print(f"{dataset} {method} seed {seed}: pre-training (log {run / 'pretrain.log'})", flush=True)
    start = time.perf_counter()
    launch(flags, run / "pretrain.log")
    info = {"flags": flags, "preset_fields": preset, "wall_seconds": round(time.perf_counter() - start, 1)}
    record.write_text(json.dumps(info, indent=1) + "\n")
    return run, info


def preset_fields(method: str) -> dict:
    """The fields of `<method>-cpu` as a JSON round trip gives them back (lists, not tuples)."""
    return json.loads(json.dumps(ssl_hf.get_method(method).presets[f"{method}-cpu"]))


def training_summary(run: Path) -> dict:
    """Steps, images, timings, precision, last loss and the online k-NN curve of a finished run."""
    records = read_metrics(run / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    seen = [0] + [r["images_seen"] for r in steps]
    run_args = json.loads((run / "args.json").read_text())
    return {
        "steps": steps[-1]["step"],
        "images_seen": steps[-1]["images_seen"],
        "train_seconds": round(sum((b - a) / r["images_per_sec"] for a, b, r in zip(seen, seen[1:], steps)), 1),
        "knn_seconds": round(sum(r.get("knn_seconds", 0) for r in records), 1),
        "images_per_sec": round(statistics.median(r["images_per_sec"] for r in (steps[2:] or steps)), 1),
        "mixed_precision": run_args["training"]["mixed_precision"],
        "mixed_precision_auto": run_args["derived"].get("mixed_precision_auto"),
        "final_loss": steps[-1]["loss"],
        "knn_floor": next((r["knn_floor"] for r in records if "knn_floor" in r), None),
        "knn_curve": [[r["step"], r["knn_top1"]] for r in records if "knn_top1" in r],
    }


def evaluate(export_dir: Path, pool: str, seed: int, args) -> list[dict]:
    """k-NN and linear probe of the export and of its calibrated floor, accuracies in percent."""
    rows = []
    for random_init in (False, True):
        for row in evaluate_backbone(
            str(export_dir),
            args.eval_dataset,
            protocols=PROTOCOLS,
            pool=pool,
            probe_epochs=args.probe_epochs,
            random_init=random_init,
            seed=seed,
        ):
            kept = {k: relative(row[k], args.workdir) if k == "floor" else row[k] for k in ROW_FIELDS if k in row}
            percent = {
                k: None if row[k] is None else round(100 * row[k], 2) for k in ("top1", "top5")
            }  # top-5: n/a < 6 classes
            rows.append(kept | percent | {"num_test": row["num_test"]})
    return rows


def environment() -> dict:
    return {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "ssl_hf": ssl_hf.__version__,
        },
    }


def result_path(args, dataset: str, method: str, seed: int) -> Path:
    return args.results / dataset / f"{method}_seed{seed}.json"


def run(args, dataset: str, method: str, seed: int) -> dict:
    """Pre-trains (or reuses), exports and evaluates one method and seed; writes and returns its result record."""
    path = result_path(args, dataset, method, seed)
    base = run_dir(args, dataset, "mae", seed) / "export" if method == "tec" else None
    command = relative(
        "ssl-hf pretrain " + shlex.join(pretrain_flags(args, dataset, method, seed, base)), args.workdir
    )
    recipe = {"command": command, "preset_fields": preset_fields(method)}
    recipe |= {"eval_dataset": relative(args.eval_dataset, args.workdir), "probe_epochs": args.probe_epochs}
    if path.is_file():
        done = json.loads(path.read_text())
        if all(done.get(k) == v for k, v in recipe.items()):
            print(f"{dataset} {method} seed {seed}: done already ({path})", flush=True)
            return done
    run, info = pretrain(args, dataset, method, seed)
    spec = ssl_hf.get_method(method)
    print(f"{dataset} {method} seed {seed}: evaluating on {args.eval_dataset}", flush=True)
    record = {
        "method": method,
        "seed": seed,
        "dataset": dataset,
        "preset": f"{method}-cpu",
        "max_steps_override": args.max_steps,
        "extra": relative(args.extra, args.workdir),
        **recipe,
        "run_dir": relative(str(run), args.workdir),
        "base_model": relative(str(base), args.workdir) if base else None,
        "wall_seconds": info["wall_seconds"],
        **training_summary(run),
        "evaluation": evaluate(export(run), spec.feature_pool, seed, args),
        **environment(),
    }
    record["pool"] = record["evaluation"][0]["pool"]  # the pooling applied: `mean` for CNNs and SelfPatch's SigLIP
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def split_pixels(dataset: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels `(N, 3, 32, 32)` of the evaluation view (resize to 32, ImageNet normalisation) and labels of a split."""
    source = load_image_source(dataset, split)
    images, columns = source.read(slice(None), ["label"])
    return EvalView(IMAGE_SIZE)(images)["pixel_values"], torch.from_numpy(np.array(columns["label"])).long()


def raw_pixels(args) -> dict:
    """k-NN and linear probe on raw pixels (no backbone); `raw_pixels.json`, computed once per dataset and epochs."""
    path = args.results / "raw_pixels.json"
    settings = {"eval_dataset": relative(args.eval_dataset, args.workdir), "probe_epochs": args.probe_epochs}
    if path.is_file():
        done = json.loads(path.read_text())
        if all(done.get(k) == v for k, v in settings.items()):
            return done
    print(f"raw pixels on {args.eval_dataset}", flush=True)
    (train_x, train_y), (test_x, test_y) = (split_pixels(args.eval_dataset, s) for s in ("train", "test"))
    train_x, test_x = train_x.flatten(1), test_x.flatten(1)
    knn = knn_accuracy(train_x, train_y, test_x, test_y)
    linear = linear_probe_accuracy(train_x, train_y, test_x, test_y, args.probe_epochs)
    record = {
        **settings,
        "image_size": IMAGE_SIZE,
        "knn": round(100 * knn["top1"], 2),
        "linear": round(100 * linear["top1"], 2),
        "knn_settings": "k=20, T=0.07",
        "num_train": len(train_y),
        "num_test": len(test_y),
        **environment(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def _line(record: dict) -> str:
    cells = [
        f"{r['protocol']} {r['top1']:.2f} % ({'floor' if r['backbone'] == 'random_init' else 'export'})"
        for r in record["evaluation"]
    ]
    minutes = f"{record['wall_seconds'] / 60:.1f} min" if record["wall_seconds"] else "reused run"
    return f"{record['dataset']} {record['method']} seed {record['seed']}: {', '.join(cells)}; {minutes}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    methods = args.methods
    if "tec" in methods and "mae" not in methods:
        methods = ["mae", *methods]  # TEC's claim is measured against its base: evaluate the base too
    raw_pixels(args)
    for dataset in args.datasets:
        for method in methods:
            for seed in args.seeds:
                print(_line(run(args, dataset, method, seed)), flush=True)
                write_curves(args.results)
    print("`python benchmarks/report.py` puts the tables in the READMEs")


if __name__ == "__main__":
    main()
