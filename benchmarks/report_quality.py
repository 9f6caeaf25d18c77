"""The quality tables of the README's benchmark section, from benchmarks/results/quality*.json."""

import json
from pathlib import Path


GLOBAL = ("knn", "linear")
CLAIMS = [  # (run, its base, claim, protocols compared)
    ("asl-aee", "mae", "ASL (AEE) > MAE (paper Tab. 1, 7)", GLOBAL),
    ("asl-dle", "mae", "ASL (DLE) > MAE (paper Tab. 7)", GLOBAL),
    ("tec-mae", "mae", "TEC surpasses its MAE base (paper Tab. 2, 4)", GLOBAL),
    ("tec-tec-mae", "tec-mae", "a second TEC round surpasses its TEC base (paper Tab. 10)", GLOBAL),
    ("msbreg-k4", "byol", "MSBReg K = 4 > BYOL (supplement Tab. 5)", GLOBAL),
    ("msbreg-k8", "byol", "MSBReg K = 8 > BYOL (supplement Tab. 5)", GLOBAL),
    ("msbreg-k4-lr1", "byol-lr0.5", "MSBReg K = 4 > BYOL, 10x lower lr (supplement Tab. 5)", GLOBAL),
    ("selfpatch", "dino", "SelfPatch > DINO on dense tasks (supplement Tab. 1, 3)", ("dense",)),
    ("selfpatch", "dino", "SelfPatch ≥ DINO on image-level tasks (supplement Tab. 2: +0.5 linear)", GLOBAL),
]


def quality_section(path: Path) -> str:
    report = json.loads(path.read_text())
    summary = report["summary_top1"]
    lines = [
        f"**Representation quality** — {report['benchmark']}; `{report['base_config']}` with each method on top "
        "(TEC: `tec_tiny.yaml`, BYOL/MSBReg: `byol_tiny.yaml`, ResNet-18), "
        f"{report['max_steps']} steps, seeds {report['seeds']} (`benchmarks/quality.py`). Top-1 accuracy, mean ± std "
        "over seeds (10 classes: chance is 10 %); feature geometry on 1,024 `digits` test images (alignment of two "
        "augmented views, lower is closer; uniformity, lower is more spread; effective rank); dense: a per-patch linear "
        "probe on the patch tokens, mean IoU over 11 classes (10 digits + background) on 1,000 `digit-scenes` test "
        "images (DINO/SelfPatch: `dino_tiny.yaml` / `selfpatch_tiny.yaml`, batch 32; SelfPatch's export has no cls token: "
        "mean of its patch tokens):",
        "",
        "| run | k-NN (k=20, T=0.07) | linear probe (BN + linear) | dense mIoU | alignment | uniformity | "
        "effective rank |",
        "|---|---|---|---|---|---|---|",
    ]
    geometry = {}
    for g in report.get("geometry", []):
        geometry.setdefault(g["run"], []).append(g)

    def geo(run: str, key: str) -> str:
        values = [g[key] for g in geometry.get(run, [])]
        return f"{sum(values) / len(values):.3f}" if values else "–"

    runs = list(dict.fromkeys(key.split("/")[0] for key in summary))

    def cell(run: str, protocol: str) -> str:
        entry = summary.get(f"{run}/{protocol}")
        if not entry:
            return "–"
        if entry["n"] < 2:
            return f"{100 * entry['mean']:.2f} % (1 seed)"
        return f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f} % ({entry['n']} seeds)"

    lines += [
        f"| {run} | {cell(run, 'knn')} | {cell(run, 'linear')} | {cell(run, 'dense')} | {geo(run, 'alignment')} "
        f"| {geo(run, 'uniformity')} | {geo(run, 'effective_rank')} |"
        for run in runs
    ]
    checks = []
    for a, b, claim, protocols in CLAIMS:
        for protocol in protocols:
            ea, eb = summary.get(f"{a}/{protocol}"), summary.get(f"{b}/{protocol}")
            if ea and eb:
                diff = 100 * (ea["mean"] - eb["mean"])
                if min(ea["n"], eb["n"]) < 2:  # no seed spread measured: say which way it went, claim nothing more
                    verdict = (
                        "higher" if diff > 0 else "lower" if diff < 0 else "equal"
                    ) + " (1 seed, no spread measured)"
                    checks.append(f"| {claim} | {protocol} | {diff:+.2f} points | {verdict} |")
                    continue
                noise = 100 * max(ea["std"], eb["std"])
                verdict = "reproduced" if diff > noise else "not reproduced at this scale"
                checks.append(f"| {claim} | {protocol} | {diff:+.2f} points (seed std {noise:.2f}) | {verdict} |")
    if checks:
        lines += ["", "| paper claim | protocol | measured difference | outcome |", "|---|---|---|---|", *checks]
    controls = sorted(path.parent.glob("quality_*.json"))  # other budgets, e.g. a compute-matched MAE
    for control in controls:
        other = json.loads(control.read_text())
        for key, entry in other["summary_top1"].items():
            run, protocol = key.split("/")
            lines.append(
                f"\nControl (`{control.name}`): {run} with {other['max_steps']} steps, {protocol} "
                f"{100 * entry['mean']:.2f} % ({entry['n']} seed{'s' if entry['n'] > 1 else ''})."
            )
    return "\n".join(lines)
