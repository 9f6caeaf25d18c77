"""Tables of the recipe sweeps (`benchmarks/sweep.py`, `results/sweeps/<sweep>/<variant>.json`) for the docs."""

import json
from pathlib import Path


def _curve(points: list, every: int = 1) -> str:
    return " · ".join(f"{step}: {value:.1f}" for step, value in points[::every])


def _stats(stats: dict) -> str:
    parts = []
    if "embedding_rank" in stats:
        parts.append(f"rank {stats['embedding_rank']:.0f}, std {stats['embedding_std']:.3f}")
        parts[-1] += f" (1/√d {stats['embedding_std_ref']:.3f})"
    if "teacher_entropy" in stats:
        parts.append(f"teacher entropy {stats['teacher_entropy']:.2f} of {stats['teacher_entropy_max']:.2f}")
    if "align_to_mae" in stats:
        parts.append(f"align/mae {stats['align_to_mae']:.2f}")
    return "; ".join(parts) or "–"


def _probe(probe: dict | None) -> str:
    if not probe:
        return "–"
    e, f = probe["export"], probe["floor"]
    return f"{e['knn']:.1f} / {e['linear']:.1f} ({f['knn']:.1f} / {f['linear']:.1f}, {probe['pool']})"


def sweep_table(directory: Path) -> list[str]:
    """One sweep: its variants with their own flags, the online k-NN curve against the calibrated floor, the end."""
    runs = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    if not runs:
        return []
    shared = {k: v for k, v in runs[0]["flags"].items() if all(r["flags"].get(k) == v for r in runs)}
    lines = [
        f"**{directory.name}** ({runs[0]['method']}; shared flags: "
        + ", ".join(f"`{k}={v}`" for k, v in shared.items())
        + ")",
        "",
        "| variant | own flags | steps | floor | online k-NN top-1 by step (%) | best after step 0 | end state | img/s "
        "| probe on digits: k-NN / linear (floor) | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        own = ", ".join(f"`{k}={v}`" for k, v in r["flags"].items() if k not in shared) or "–"
        if "error" in r:
            lines.append(f"| {r['variant']} | {own} | – | – | failed | – | – | – | – | see its log |")
            continue
        note = f"stopped: {r['stopped_early']}" if r.get("stopped_early") else ""
        floor = "–" if r.get("knn_floor") is None else f"{r['knn_floor']:.1f}"
        trained = [value for step, value in r["knn_curve"] if step > 0]
        best = f"{max(trained):.1f}" if trained else "–"
        lines.append(
            f"| {r['variant']} | {own} | {r['steps']} | {floor} | {_curve(r['knn_curve'])} | {best} | "
            f"{_stats(r.get('final_stats', {}))} | {r.get('images_per_sec_median')} | {_probe(r.get('probe'))} | {note} |"
        )
    return lines


def sweeps_section(results: Path) -> str:
    """Every sweep under `results/sweeps`, or an empty string when there is none."""
    root = results / "sweeps"
    tables = [sweep_table(d) for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
    tables = [t for t in tables if t]
    if not tables:
        return ""
    intro = (
        "**Recipe sweeps** (`benchmarks/sweep.py`, one pre-training run per variant on `digit-scenes`, 1 seed, 1 thread "
        "each; the online k-NN is on `digits` with 2,000 images per split; the floor is the step-0 encoder with "
        "BatchNorm statistics from those images; a variant stops early when its k-NN has not risen 2 points above "
        "the floor by the sweep's stop step). These choose the `-cpu` presets (`src/ssl_hf/cpu_presets.py`)."
    )
    return "\n\n".join([intro, *("\n".join(t) for t in tables)])
