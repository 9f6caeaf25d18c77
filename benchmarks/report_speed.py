"""The speed table of docs/benchmarks.md, from benchmarks/results/speed.json (written by speed.py)."""

import json
from pathlib import Path


def _check_schema(report: dict, path: Path) -> None:
    results = report.get("results", [])
    if "config" in report or any("group" not in r or not isinstance(r.get("models"), dict) for r in results):
        raise ValueError(
            f"{path} has the earlier pairwise schema of benchmarks/speed.py (pairs instead of groups); regenerate it "
            "with `python benchmarks/speed.py`"
        )


def _setting(setting: dict) -> str:
    patch = f"/{setting['patch_size']}" if "patch_size" in setting else ""
    text = f"{setting['backbone']}{patch} @{setting['image_size']}, batch {setting['batch_size']}"
    return f"{text}, {setting['note']}" if setting.get("note") else text


def _ratio(value: float | None, rounds: list[float] | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} ({rounds[0]:.2f}–{rounds[1]:.2f})"


def _timing(timing: dict) -> str:
    return (
        f"{timing['warmup']} warm-up step(s), median of {timing['repeats']} rounds of ≥ {timing['round_seconds']:g} s "
        "per model"
    )


def allocator(report: dict) -> str:
    """The CPU allocator a speed run used (files without the field predate speed.py applying the loop's setting)."""
    env = ", ".join(f"`{k}={v}`" for k, v in (report.get("environment") or {}).items())
    if report.get("cpu_keep_freed_memory"):
        text = (
            "the training loop's CPU allocator setting (`--cpu_keep_freed_memory`: glibc keeps freed memory for reuse)"
        )
    else:
        text = "glibc's default allocator (tensors over 32 MB are mmap'd and page-faulted again on every step)"
    return f"{text}, with {env}" if env else text


def speed_section(path: Path) -> str:
    """Markdown: how the speed was measured and one row per model, group and precision.

    Raises:
        ValueError: `path` was written by the earlier pairwise speed.py.
    """
    path = Path(path)
    report = json.loads(path.read_text())
    _check_schema(report, path)
    results = report["results"]
    # the description follows the results (a partial re-run may have used other settings than earlier results)
    timings = [r["timing"] for r in results]
    timing = max(timings, key=timings.count) if timings else report["timing"]
    memory = "; ".join(sorted({r["memory_metric"] for r in results if r.get("memory_metric")})) or "not measured"
    threads = ", ".join(str(t) for t in sorted({r.get("threads", report["machine"]["threads"]) for r in results}))
    lines = [
        f"**Training-step throughput** — {report['benchmark']}. The models of a group (a method, its base and "
        "`transformers.ViTMAEForPreTraining` built from the ssl_hf MAE config) alternate round-robin in one process, the order "
        f"rotating every round; {_timing(timing)} (as many steps as fill a round, at least one); ratios are "
        f"step-time ratios of the medians (per-round range in brackets). {threads} threads on "
        f"{report['machine']['device']} ({report['machine']['cpu']}), {allocator(report)}; peak memory: {memory} "
        f"(`benchmarks/speed.py`, torch {report['versions']['torch']}, transformers "
        f"{report['versions']['transformers']}):",
        "",
        "| group | model | setting | precision | img/s | peak memory (MiB) | step time / base | step time / ViTMAE "
        "| target (/ base) | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {}  # (group, model) -> rows of its precisions, in the order of the file
    for r in results:
        targets = {t["model"]: t for t in r.get("targets", [])}
        for label, m in r["models"].items():
            setting = _setting(m["setting"])
            if r["timing"] != timing:
                setting += f" ({_timing(r['timing'])})"
            memory_mib = "–" if m.get("peak_memory_mib") is None else f"{m['peak_memory_mib']:.0f}"
            target, met = "–", "–"
            if label in targets:
                target = f"≤ {targets[label]['max']:g}"
                met = "yes" if targets[label]["meets_target"] else "**no**"
            base = "base" if label == r["base"] else _ratio(m["ratio_to_base"], m["ratio_to_base_rounds"])
            vitmae = (
                "reference" if label == r["reference"] else _ratio(m["ratio_to_vitmae"], m["ratio_to_vitmae_rounds"])
            )
            rows.setdefault((r["group"], label), []).append(
                f"| {r['group']} | {label} | {setting} | {r['precision']} | {m['images_per_second']:.1f} | "
                f"{memory_mib} | {base} | {vitmae} | {target} | "
                f"{met} |"
            )
    lines += [row for group_rows in rows.values() for row in group_rows]
    return "\n".join(lines)
