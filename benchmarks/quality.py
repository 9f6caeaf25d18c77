"""Representation quality after the same pre-training budget: pre-train on digit-scenes, export, evaluate on digits.

Every run uses `examples/configs/mae_tiny.yaml` (ViT-Tiny/4 at 32x32, batch 64, the same steps, lr and seed) with a
method and its switches on top (TEC runs: `tec_tiny.yaml`, the same settings with TEC's fields); a randomly initialised backbone of the same architecture is the floor. Evaluation:
weighted k-NN (k=20, T=0.07) and a linear probe (BatchNorm without affine + linear) on frozen cls features of the
`digits` test split.

    python benchmarks/quality.py [--runs mae,asl-aee,asl-dle] [--max_steps 800] [--seeds 0] [--workdir runs/bench]

TEC runs learn from the export of another run of the same seed (`tec-mae` from `mae`, `tec-tec-mae` from `tec-mae`),
which is trained first if its export is missing; finished runs of the work dir are reused.
Writes benchmarks/results/quality.json; `python benchmarks/report.py` puts the table in the README.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ssl_hf.evaluation import evaluate_backbone, representation_diagnostics
from ssl_hf.export import export_pretrained


ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "examples" / "configs" / "mae_tiny.yaml"
TEC_CONFIG = ROOT / "examples" / "configs" / "tec_tiny.yaml"
BYOL_CONFIG = ROOT / "examples" / "configs" / "byol_tiny.yaml"
DINO_CONFIG = ROOT / "examples" / "configs" / "dino_tiny.yaml"
SELFPATCH_CONFIG = ROOT / "examples" / "configs" / "selfpatch_tiny.yaml"
RUNS = {
    "mae": ["--method", "mae"],
    "asl-aee": ["--method", "asl", "--feature_augmentation", "aee"],
    "asl-dle": ["--method", "asl", "--feature_augmentation", "dle"],
    # ablations run when ASL does not beat MAE at this scale (not in the default set)
    "asl-aee-lambda0.1": ["--method", "asl", "--feature_augmentation", "aee", "--alignment_weight", "0.1"],
    "asl-aee-dropout0.1": ["--method", "asl", "--feature_augmentation", "aee", "--aee_hidden_dropout_prob", "0.1"],
    # TEC learns from the export of another run (same seed); tec_tiny.yaml = mae_tiny.yaml's settings, k 5, tau 1.8
    "tec-mae": ["--method", "tec", "--base_model", "{base}"],
    # the sustainable chain: a second TEC learns from the first (TEC Tab. 10)
    "tec-tec-mae": ["--method", "tec", "--base_model", "{base}"],
    # BYOL / MSBReg: byol_tiny.yaml (ResNet-18 at 32 px, LARS, peak lr 5 at K = 2); MSBReg scales the peak lr by K / 2
    # relative to BYOL, as its rule "max lr = base x batch / 256 x K" does (K = 2 is BYOL)
    "byol": [],
    "msbreg-k4": ["--method", "msbreg", "--num_views", "4", "--learning_rate", "10.0"],
    "msbreg-k8": ["--method", "msbreg", "--num_views", "8", "--learning_rate", "20.0"],
    # the same at a 10x lower peak lr (at lr 5 BYOL's features collapsed to effective rank ~2.5 on digits)
    "byol-lr0.5": ["--learning_rate", "0.5"],
    "msbreg-k4-lr1": ["--method", "msbreg", "--num_views", "4", "--learning_rate", "1.0"],
    # DINO / SelfPatch: dino_tiny.yaml / selfpatch_tiny.yaml (ViT-Tiny/4, 2 x 32 px + 2 x 16 px crops, batch 32, heads 512 wide);
    # the dense patch probe on digit-scenes is their comparison (SelfPatch's claim is about dense tasks)
    "dino": [],
    "selfpatch": [],
    # DINO stays on its early plateau at this budget: a small-data variant (fewer prototypes, a faster teacher,
    # trainable weight-norm gain)
    "dino-k1024-ema0.99": ["--out_dim", "1024", "--ema_base", "0.99", "--norm_last_layer", "false"],
}
BASE_RUN = {"tec-mae": "mae", "tec-tec-mae": "tec-mae"}  # runs whose export is the base model of another
CONFIGS = {  # base config of each run (default: mae_tiny.yaml)
    **dict.fromkeys(("tec-mae", "tec-tec-mae"), TEC_CONFIG),
    **dict.fromkeys(("byol", "msbreg-k4", "msbreg-k8", "byol-lr0.5", "msbreg-k4-lr1"), BYOL_CONFIG),
    "dino": DINO_CONFIG,
    "dino-k1024-ema0.99": DINO_CONFIG,
    "selfpatch": SELFPATCH_CONFIG,
}
DENSE_RUNS = (
    "dino",
    "selfpatch",
    "dino-k1024-ema0.99",
)  # runs (and their random-init floors) that also get the dense patch probe
DEFAULT_RUNS = ("mae", "asl-aee", "asl-dle")


def pretrain_and_export(name: str, seed: int, args) -> tuple[Path, float]:
    run = Path(args.workdir) / f"{name}-s{seed}"
    if (run / "export" / "config.json").is_file() and (run / "seconds.txt").is_file():  # done (e.g. as a base model)
        return run / "export", float((run / "seconds.txt").read_text())
    base = None
    if name in BASE_RUN:
        base, _ = pretrain_and_export(BASE_RUN[name], seed, args)
    config = CONFIGS.get(name, BASE_CONFIG)
    cmd = [sys.executable, "-m", "ssl_hf.cli", "pretrain", "--config", str(config)]
    cmd += [a.format(base=base) for a in RUNS[name]]
    cmd += ["--max_steps", str(args.max_steps), "--seed", str(seed), "--output_dir", str(run)]
    cmd += ["--save_steps", str(args.max_steps), "--resume_from_checkpoint", "latest"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    export = export_pretrained(run / "final", run / "export")
    (run / "seconds.txt").write_text(f"{seconds:.1f}\n")
    return export, seconds


def random_init_name(export: Path) -> str:
    """`random-init` for the ViT runs (the name earlier results use), `random-init-resnet` for ResNet runs."""
    model_type = json.loads((export / "config.json").read_text())["model_type"]
    return "random-init" if model_type == "vit" else f"random-init-{model_type}"


def evaluate(export: Path, protocols: tuple[str, ...], args, **kwargs) -> list[dict]:
    """k-NN / linear on digits and, when asked, the dense patch probe on digit-scenes (patch labels)."""
    return evaluate_backbone(
        str(export),
        "digits",
        protocols=protocols,
        probe_epochs=args.probe_epochs,
        dense_dataset="digit-scenes",
        **kwargs,
    )


def _print(run: str, seed: int, r: dict) -> None:
    if "top1" in r:
        print(f"{run} seed {seed} {r['protocol']}: top-1 {100 * r['top1']:.2f}%", flush=True)
    else:
        print(f"{run} seed {seed} dense: mIoU {r['mean_iou']:.2f}%, pixel acc {r['pixel_accuracy']:.2f}%", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS), help=f"any of {', '.join(RUNS)}")
    parser.add_argument("--no_random_init", action="store_true", help="skip the random-init floor")
    parser.add_argument("--max_steps", type=int, default=800)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--probe_epochs", type=int, default=100)
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "quality.json"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    output = Path(args.output)
    previous = json.loads(output.read_text()) if output.is_file() else None
    if previous and previous.get("max_steps") != args.max_steps:
        raise SystemExit(f"{output} holds a {previous.get('max_steps')}-step budget; use another --output")
    rows, geometry = [], []
    floors = {}  # one random-init floor per architecture family (ViT-Tiny/4, ResNet-18, cls-free ViT)
    dense_floors = set()
    for name in args.runs.split(","):
        protocols = ("knn", "linear", "dense") if name in DENSE_RUNS else ("knn", "linear")
        for seed in seeds:
            export, seconds = pretrain_and_export(name, seed, args)
            floors.setdefault(random_init_name(export), export)
            if "dense" in protocols:
                dense_floors.add(random_init_name(export))
            for r in evaluate(export, protocols, args):
                rows.append({"run": name, "seed": seed, "pretrain_seconds": round(seconds, 1), **r})
                _print(name, seed, r)
            geometry.append({"run": name, "seed": seed, **representation_diagnostics(str(export), "digits")})
    for floor, export in floors.items():
        protocols = ("knn", "linear", "dense") if floor in dense_floors else ("knn", "linear")
        for seed in [] if args.no_random_init else seeds:  # floor: same architecture, random weights
            for r in evaluate(export, protocols, args, random_init=True, seed=seed):
                rows.append({"run": floor, "seed": seed, **r})
                _print(floor, seed, r)
            diag = representation_diagnostics(str(export), "digits", random_init=True, seed=seed)
            geometry.append({"run": floor, "seed": seed, **diag})
    if previous:  # keep earlier results of runs not repeated now
        redone = {(row["run"], row["seed"]) for row in rows}
        rows = [row for row in previous["rows"] if (row["run"], row["seed"]) not in redone] + rows
        kept = [g for g in previous.get("geometry", []) if (g["run"], g["seed"]) not in redone]
        geometry = kept + geometry
    summary = {}
    for row in rows:  # top-1 (k-NN, linear) and the dense probe's mean IoU, as fractions
        summary.setdefault(f"{row['run']}/{row['protocol']}", []).append(
            row["top1"] if "top1" in row else row["mean_iou"] / 100
        )
    report = {
        "benchmark": "pre-train on digit-scenes (train), evaluate frozen cls features on digits (test)",
        "base_config": str(BASE_CONFIG.relative_to(ROOT)),
        "max_steps": args.max_steps,
        "seeds": seeds,
        "runs": {name: RUNS[name] for name in dict.fromkeys(row["run"] for row in rows) if name in RUNS},
        "rows": rows,
        "geometry": geometry,
        "summary_top1": {
            key: {"mean": statistics.mean(v), "std": statistics.pstdev(v), "n": len(v)} for key, v in summary.items()
        },
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
