"""The quality tables of the README's benchmark section, from benchmarks/results/quality.json."""

import json
from pathlib import Path


PROTOCOLS = ("knn", "linear", "dense")


def _cell(entry: dict | None) -> str:
    if not entry:
        return "–"
    if entry["n"] < 2:
        return f"{100 * entry['mean']:.2f}"
    return f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}"


def _budget_table(report: dict, budget: str) -> list[str]:
    summary = report["summary"].get(budget, {})
    steps, images = {}, {}
    for run in report["runs"]:
        if run["budget"] == budget:
            steps.setdefault(run["method"], set()).add(run["steps"])
            images.setdefault(run["method"], set()).add(run["images_seen"])
    pools = {name: m["pool"] for name, m in report["methods"].items()}
    lines = [
        "| run | features | steps | images seen | k-NN top-1 % | linear top-1 % | dense mIoU % | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, entries in summary.items():
        n = max(e["n"] for e in entries.values())
        pool = pools.get(run) or ("pixels" if run == "raw pixels" else run.rsplit("(", 1)[-1].rstrip(")"))
        step = "/".join(str(s) for s in sorted(steps.get(run, []))) or "–"
        seen = "/".join(f"{i:,}" for i in sorted(images.get(run, []))) or "–"
        cells = " | ".join(_cell(entries.get(p)) for p in PROTOCOLS)
        lines.append(f"| {run} | {pool} | {step} | {seen} | {cells} | {n} |")
    return lines


def quality_section(path: Path, chart: str | None = "benchmarks/results/quality.png", compact: bool = False) -> str:
    """The quality tables of one results file; `compact` replaces the method paragraph by a one-line header (for
    runs beside the main one, e.g. a longer budget for some methods)."""
    report = json.loads(path.read_text())
    if "summary" not in report:
        raise SystemExit(f"{path} is in an old format; regenerate it with `python benchmarks/quality.py`")
    methods = ", ".join(
        f"{n}: `{m['config'].rsplit('/', 1)[-1]}` {' '.join(m['args'])}".rstrip() for n, m in report["methods"].items()
    )
    ips = ", ".join(f"{n} {v:.0f}" for n, v in report["calibration_images_per_second"].items())
    lines = [
        f"**Representation quality** — {report['benchmark']}. Same wall-clock budget: **{report['budget_minutes']:g} "
        f"minute{'' if report['budget_minutes'] == 1 else 's'} of pre-training per method and seed** on {report['threads']} CPU threads (the step count comes from a "
        f"calibration run; measured images/s: {ips}), seeds {report['seeds']}; mean ± std over seeds "
        "(`benchmarks/quality.py`, configs under `examples/configs`: "
        f"{methods}). Floors (one per seed, same pooling as the methods they are compared with): MAE's own "
        "initialisation before any optimiser step for MAE, ASL and TEC (xavier weights and fixed sin-cos positions "
        "probe differently from transformers' ViT init), the same architecture with transformers' random init for the "
        "others, and raw pixels. "
        f"k-NN: k = 20, T = 0.07; linear: BN without affine + linear, SGD {report.get('probe_epochs', 100)} epochs; "
        "dense: a per-patch linear probe on "
        "the patch tokens (raw pixels: each 4×4 patch), mean IoU over 11 classes on 1,000 `digit-scenes` test images. "
        "Chance is 10 %. TEC's minutes are its own; it learns from the MAE run of the same seed. ResNet `cls` "
        "features are its pooled output.",
        "",
        *_budget_table(report, "time"),
    ]
    if compact:
        minutes = report["budget_minutes"]
        lines[0] = (
            f"**{minutes:g} minutes per method and seed** (`{path.name}`; methods {', '.join(report['methods'])}, seeds "
            f"{report['seeds']}, measured images/s: {ips}; otherwise as above):"
        )
    if chart:
        lines += ["", f"![k-NN, linear and dense probe of every run]({chart})"]
    if report["summary"].get("images"):
        lines += [
            "",
            f"Same number of images seen ({report['images_matched']:,}: what the slowest method saw in the budget), "
            f"seeds {report['images_seeds']}:",
            "",
            *_budget_table(report, "images"),
        ]
    if report["floors"]:
        lines += [
            "",
            "Each method against its floor (k-NN, same wall-clock budget; it beats the floor when the "
            "margin exceeds the larger seed std, with at least 2 seeds):",
            "",
            "| method | floor | k-NN margin (points) | seed std | beats the floor |",
            "|---|---|---|---|---|",
            *(
                f"| {f['method']} | {f['floor']} | {100 * f['margin']:+.2f} | {100 * f['seed_std']:.2f} | "
                f"{'yes' if f['beats_floor'] else '**no**'} |"
                for f in report["floors"]
            ),
        ]
    if report["claims"]:
        lines += [
            "",
            "The papers' claims at this scale (same wall-clock budget; reproduced when the difference exceeds the "
            "larger seed std):",
            "",
            "| paper claim | protocol | measured difference (points) | seed std | outcome |",
            "|---|---|---|---|---|",
            *(
                f"| {c['claim']} | {c['protocol']} | {100 * c['difference']:+.2f} | {100 * c['seed_std']:.2f} | "
                f"{c['outcome']} |"
                for c in report["claims"]
            ),
        ]
    return "\n".join(lines)
