"""The profile table of docs/benchmarks.md, from benchmarks/results/profile_<group>.json (written by profile_step.py).

Per model of a profiled speed group: its setting, the wall time of a step, FLOPs per step (`FlopCounterMode`), both
as ratios to the group's first model (its base), and the forward time of its most expensive top-level module.
"""

import json
from pathlib import Path


def _top_module(model: dict) -> str:
    """The top-level child whose forward takes the most CPU time per step (a child profiled only through its own
    children, e.g. `backbone.embeddings` and `backbone.encoder`, counts as their sum)."""
    regions = {k: v["cpu_ms_per_step"] for k, v in model.get("modules_forward", {}).items()}
    tops: dict[str, float] = {}
    for name in {k.split(".")[0] for k in regions}:
        children = [v for k, v in regions.items() if k.startswith(name + ".") and k.count(".") == 1]
        tops[name] = regions.get(name, sum(children))
    if not tops:
        return "\N{EN DASH}"
    name = max(tops, key=tops.get)
    forward = model.get("phases", {}).get("forward", {}).get("cpu_ms_per_step")
    total = f" of {forward / 1000:.2f}" if forward else ""
    return f"`{name}`: {tops[name] / 1000:.2f} s{total}"


def profile_table(paths: list[Path]) -> list[str]:
    """One row per profiled model of every file; ratios are to the first model of its file."""
    lines = [
        "| group | model | setting | precision | step (s) | GFLOP per step | FLOPs / base | step time / base "
        "| slowest module in the forward (s of the forward) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        report = json.loads(path.read_text())
        group = path.stem.removeprefix("profile_")
        models = report.get("models", {})
        if not models:
            continue
        base = next(iter(models.values()))
        for label, m in models.items():
            s = m["setting"]
            setting = f"{s['backbone']}/{s['patch_size']} @{s['image_size']}, batch {s['batch_size']}"
            if s.get("note"):
                setting += f", {s['note']}"
            flops = "base" if m is base else f"{m['gflops_per_step'] / base['gflops_per_step']:.2f}"
            time = "base" if m is base else f"{m['step_seconds_wall'] / base['step_seconds_wall']:.2f}"
            lines.append(
                f"| {group} | {label} | {setting} | {report['precision']} | {m['step_seconds_wall']:.2f} | "
                f"{m['gflops_per_step']:,.0f} | {flops} | {time} | {_top_module(m)} |"
            )
    return lines


def profile_section(results: Path) -> str:
    """Markdown: the machine and the table of every `profile_*.json`, or an empty string when there is none."""
    paths = sorted(results.glob("profile_*.json"))
    if not paths:
        return ""
    first = json.loads(paths[0].read_text())
    return "\n".join(
        [
            "**Where a step's time goes** (`benchmarks/profile_step.py`: `torch.profiler` and `FlopCounterMode` over "
            f"{first['timing']['steps']} steps after {first['timing']['warmup']} warm-up, {first['threads']} threads "
            f"on {first['machine']['cpu']}, torch {first['versions']['torch']}):",
            "",
            *profile_table(paths),
        ]
    )
