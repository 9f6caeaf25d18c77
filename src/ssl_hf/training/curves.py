"""A PNG of a run's curves: training loss and online k-NN top-1 against the optimiser step, with the k-NN floor.

matplotlib is imported inside the function and pyplot is never used (as `ssl_hf.evaluation.plots`).
"""

import json
import os
from pathlib import Path

from ..evaluation.plots import DPI, _save


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a run's `metrics.jsonl`, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_training_curves(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path | None:
    """Draws the loss (left axis, log scale) and the online k-NN top-1 (right axis) of a run.

    The k-NN floor logged at step 0 (`knn_floor`: the step-0 encoder with BatchNorm statistics from the evaluation
    images) is drawn as a dashed line and as the curve's step-0 point, so learning reads as the distance above it.

    Args:
        run_dir: A run's `output_dir` (holds `metrics.jsonl`).
        path: Output PNG (default `run_dir/training_curves.png`).

    Returns:
        The PNG path, or None when the run logged no step yet.
    """
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if not losses:
        return None
    floor = next((r["knn_floor"] for r in records if "knn_floor" in r), None)
    # step 0 at the calibrated floor: a fresh network's BatchNorms run their initial statistics (mean 0, variance 1)
    knn = [
        (r["step"], floor if r["step"] == 0 and floor is not None else r["knn_top1"])
        for r in records
        if "knn_top1" in r
    ]
    fig = Figure(figsize=(6.4, 4.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(*zip(*losses), color="tab:blue", linewidth=1, label="training loss")
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss", color="tab:blue")
    ax.grid(True, which="both", alpha=0.3)
    if knn:
        right = ax.twinx()
        right.plot(*zip(*knn), color="tab:red", marker="o", markersize=3, linewidth=1.5, label="online k-NN top-1")
        if floor is not None:
            right.axhline(floor, color="tab:red", linestyle="--", linewidth=1, label=f"floor (step 0) {floor:.1f} %")
        right.set_ylabel("online k-NN top-1 (%)", color="tab:red")
        right.legend(loc="lower right", fontsize=8)
    ax.set_title(run_dir.name, fontsize=10)
    return _save(fig, path or run_dir / "training_curves.png")
