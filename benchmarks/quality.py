"""Representation quality of every method and its base after the same pre-training budget.

Each method pre-trains on `digit-scenes` (train split) from its example config, is exported, and its frozen features
are probed with `ssl_hf.evaluation`: weighted k-NN (k=20, T=0.07) and a linear probe (BN without affine + linear) on
`digits` (test split), and for ViTs a per-patch dense probe (mean IoU) on `digit-scenes` (test split). Two budgets:

- **same wall-clock** (`--budget_minutes M`): every method trains for M minutes of optimiser steps; the step count
  comes from a short calibration run of the method (its measured images/s on this machine), so the learning-rate
  schedule completes. TEC's minutes are its own: its base (the MAE run of the same seed) is trained first.
- **same images seen** (`--images_seeds`): every method sees as many images as the slowest method saw in M minutes
  (runs with the same step count are shared with the wall-clock budget).

Floors: a randomly initialised backbone of each architecture (same pooling as the method it is compared with, one
per seed) and raw pixels (no backbone). Features: the token mean for MAE, ASL and TEC (MAE's `global_pool`; their
losses never train the cls token) and for SelfPatch (no cls token), the cls token for DINO, the pooled output for the
ResNets.

    python benchmarks/quality.py --budget_minutes 2 --seeds 0,1,2 --images_seeds 0
    python benchmarks/quality.py --methods dino,selfpatch --budget_minutes 10 --output results/quality_dino.json

Finished runs in the work dir are reused (runs are keyed by method, seed and step count). Writes
benchmarks/results/quality.json and quality.png; `python benchmarks/report.py` puts the tables in the README.
"""

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoConfig, AutoModelForPreTraining, set_seed

from ssl_hf.data.builtin import decode_pixels, load_builtin
from ssl_hf.data.views import IMAGENET_MEAN, IMAGENET_STD
from ssl_hf.evaluation import evaluate_backbone
from ssl_hf.evaluation.dense import dense_probe
from ssl_hf.evaluation.knn import knn_accuracy
from ssl_hf.evaluation.linear_probe import linear_probe_accuracy
from ssl_hf.export import export_pretrained


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "configs"
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Method:
    config: str  # example config under examples/configs
    args: tuple[str, ...] = ()  # CLI overrides ("{base}" = the export of `needs`)
    pool: str = "mean"  # feature pooling of every probe
    floor: str = "vit"  # the floor: `mae-init` (the MAE family's own init, 0 steps) or random-init vit|siglip|resnet
    base: str | None = None  # the method it is compared with (paper claim)
    needs: str | None = None  # a run whose export this method learns from (same seed and budget)
    claims: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())


GLOBAL, DENSE = ("knn", "linear"), ("dense",)
METHODS = {
    # the MAE family initialises its ViT its own way (xavier, fixed sin-cos positions), which alone changes the probes:
    # its floor is MAE's initialisation before any optimiser step
    "mae": Method("mae_tiny.yaml", floor="mae-init"),
    "asl": Method(
        "mae_tiny.yaml", ("--method", "asl"), floor="mae-init", base="mae", claims=(("ASL > MAE (Tab. 1, 7)", GLOBAL),)
    ),
    "tec": Method(
        "tec_tiny.yaml",
        ("--method", "tec", "--base_model", "{base}"),
        floor="mae-init",
        base="mae",
        needs="mae",
        claims=(("TEC > its MAE base (Tab. 2, 4)", GLOBAL),),
    ),
    # ResNet-18 (standard stem: the small stem costs ~16x per image on CPU) with LARS; BYOL's rule lr = 0.2 x batch /
    # 256 = 0.05 at batch 64; MSBReg's rule scales the peak lr by K / 2
    "byol": Method("byol_tiny.yaml", ("--learning_rate", "0.05"), pool="cls", floor="resnet"),
    "msbreg": Method(
        "byol_tiny.yaml",
        ("--method", "msbreg", "--num_views", "4", "--learning_rate", "0.1"),
        pool="cls",
        floor="resnet",
        base="byol",
        claims=(("MSBReg (K = 4) > BYOL (Supp. Tab. 5)", GLOBAL),),
    ),
    "dino": Method("dino_tiny.yaml", pool="cls"),
    "selfpatch": Method(
        "selfpatch_tiny.yaml",
        floor="siglip",
        base="dino",
        claims=(("SelfPatch > DINO on dense tasks (Tab. 1, 3)", DENSE), ("SelfPatch ≥ DINO, image level", GLOBAL)),
    ),
}


def protocols_of(method: Method) -> tuple[str, ...]:
    return GLOBAL + (DENSE if method.floor != "resnet" else ())  # the dense probe needs patch tokens


def floor_name(method: Method) -> str:
    if method.floor == "mae-init":
        return f"MAE init, 0 steps ({method.pool})"
    return f"random-init {method.floor} ({method.pool})"


def _run(cmd: list[str], log: Path) -> None:
    with log.open("w") as f:
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}); log {log}:\n{tail}")


def _metrics(run: Path) -> list[dict]:
    """The per-step records of a training run (`metrics.jsonl`)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@functools.cache
def _batch_size(config: str) -> int:
    return int(yaml.safe_load((CONFIGS / config).read_text())["training"]["batch_size"])


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = Path(args.workdir)
        self.calibration_file = self.workdir / "calibration.json"
        known = self.calibration_file.is_file() and not args.recalibrate
        self.calibration = json.loads(self.calibration_file.read_text()) if known else {}

    def command(self, name: str, seed: int, steps: int, out: Path, base: Path | None) -> list[str]:
        method = METHODS[name]
        cmd = [sys.executable, "-m", "ssl_hf.cli", "pretrain", "--config", str(CONFIGS / method.config)]
        cmd += [a.format(base=base) for a in method.args]
        warmup = max(1, round(0.05 * steps))
        cmd += [
            "--max_steps",
            str(steps),
            "--warmup_steps",
            str(warmup),
            "--seed",
            str(seed),
            "--output_dir",
            str(out),
        ]
        return [*cmd, "--save_steps", str(steps), "--resume_from_checkpoint", "latest"]

    def batch_size(self, name: str) -> int:
        return _batch_size(METHODS[name].config)

    def images_per_second(self, name: str, base: Path | None) -> float:
        """Measured training throughput of a method on this machine (a 10-step run, median of steps 4-10)."""
        if name not in self.calibration:
            out = self.workdir / "calibration" / name
            print(f"calibrating {name} (10 steps)", flush=True)
            out.mkdir(parents=True, exist_ok=True)
            _run(self.command(name, 0, 10, out, base), out.parent / f"{name}.log")
            self.calibration[name] = statistics.median(r["images_per_sec"] for r in _metrics(out)[3:])
            self.calibration_file.write_text(json.dumps(self.calibration, indent=2) + "\n")
        return self.calibration[name]

    def steps_for_minutes(self, name: str, base: Path | None) -> int:
        ips = self.images_per_second(name, base)
        return max(1, int(self.args.budget_minutes * 60 * ips / self.batch_size(name)))

    def pretrain(self, name: str, seed: int, budget: str) -> dict:
        """Pre-trains (or reuses) `name` for the wall-clock (`time`) or images-seen (`images`) budget; exports it."""
        method = METHODS[name]
        base = self.pretrain(method.needs, seed, budget)["export"] if method.needs else None
        if budget == "time":
            steps = self.steps_for_minutes(name, base)
        else:
            steps = max(1, round(self.images_matched / self.batch_size(name)))
        run = self.workdir / f"{name}-s{seed}-{steps}steps"
        record = run / "bench.json"
        if not record.is_file():
            print(f"pre-training {name} seed {seed}: {steps} steps ({budget} budget)", flush=True)
            start = time.perf_counter()
            _run(self.command(name, seed, steps, run, base), run.with_suffix(".log"))
            wall = time.perf_counter() - start
            export = export_pretrained(run / "final", run / "export")
            rows = _metrics(run)
            train_seconds = sum(
                (r["images_seen"] - prev) / r["images_per_sec"]
                for r, prev in zip(rows, [0] + [r["images_seen"] for r in rows])
            )
            record.write_text(
                json.dumps(
                    {
                        "export": str(export),
                        "steps": steps,
                        "images_seen": rows[-1]["images_seen"],
                        "train_seconds": round(train_seconds, 1),
                        "process_seconds": round(wall, 1),
                        "final_loss": rows[-1]["loss"],
                    }
                )
            )
        return json.loads(record.read_text())

    def initial_export(self, name: str, seed: int) -> str:
        """`name`'s own initialisation (seeded as the CLI seeds it), saved and exported without any optimiser step."""
        run = self.workdir / f"{name}-s{seed}-0steps"
        if not (run / "export" / "config.json").is_file():
            trained = Path(self.pretrain(name, seed, "time")["export"]).parent / "final"
            set_seed(seed)
            model = AutoModelForPreTraining.from_config(AutoConfig.from_pretrained(trained))
            model.save_pretrained(run / "final")
            export_pretrained(run / "final", run / "export")
        return str(run / "export")

    def evaluate(self, export: str, method: Method, seed: int, random_init: bool = False) -> list[dict]:
        return evaluate_backbone(
            export,
            "digits",
            protocols=protocols_of(method),
            pool=method.pool,
            probe_epochs=self.args.probe_epochs,
            dense_dataset="digit-scenes",
            random_init=random_init,
            seed=seed,
        )


def _pixels(name: str, split: str, limit: int | None) -> tuple[torch.Tensor, dict]:
    ds = load_builtin(name, split)
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    data = ds.with_format("numpy")[:]
    images = torch.from_numpy(decode_pixels(data["pixels"], 32)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (images - mean) / std, data


def pixel_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """`(N, C, H, W)` -> `(N, L, C * patch * patch)`: each patch's pixels, patches in row-major order (as ViT tokens)."""
    return x.unfold(2, patch, patch).unfold(3, patch, patch).permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)


def raw_pixel_floor(args) -> list[dict]:
    """k-NN and linear probe on the normalised pixels, dense probe on each 4x4 patch's pixels (no backbone)."""
    (train, train_data), (test, test_data) = (_pixels("digits", split, None) for split in ("train", "test"))
    train_y, test_y = (torch.from_numpy(np.asarray(d["label"])).long() for d in (train_data, test_data))
    train_f, test_f = train.flatten(1), test.flatten(1)
    knn = knn_accuracy(train_f, train_y, test_f, test_y)
    linear = linear_probe_accuracy(train_f, train_y, test_f, test_y, args.probe_epochs)
    # dense: the same images as evaluate_backbone's dense probe (the first 2,000 / 1,000 of each split)
    (scenes, scene_data), (scenes_test, scene_test_data) = (
        _pixels("digit-scenes", split, limit) for split, limit in (("train", 2000), ("test", 1000))
    )

    seg, seg_test = (torch.from_numpy(np.asarray(d["segmentation"])).long() for d in (scene_data, scene_test_data))
    dense = dense_probe(pixel_patches(scenes, 4), seg, pixel_patches(scenes_test, 4), seg_test, 4, 32)
    common = {"backbone": "raw pixels", "pool": "pixels"}
    return [
        {"protocol": "knn", **common, **knn},
        {"protocol": "linear", **common, **linear},
        {"protocol": "dense", **common, **dense},
    ]


def score(row: dict) -> float:
    """Top-1 (k-NN, linear) or mean IoU (dense) as a fraction."""
    return row["top1"] if "top1" in row else row["mean_iou"] / 100


def summarise(rows: list[dict]) -> dict:
    values = {}
    for row in rows:
        values.setdefault(row["budget"], {}).setdefault(row["run"], {}).setdefault(row["protocol"], []).append(
            score(row)
        )
    return {
        budget: {
            run: {
                p: {"mean": statistics.mean(v), "std": statistics.pstdev(v), "n": len(v)} for p, v in protocols.items()
            }
            for run, protocols in runs.items()
        }
        for budget, runs in values.items()
    }


def verdicts(summary: dict) -> tuple[list[dict], list[dict]]:
    """Each method against its random-init floor (k-NN) and each paper claim, on the wall-clock budget."""
    time_summary = summary.get("time", {})
    floors, claims = [], []
    for name, method in METHODS.items():
        ours, floor = time_summary.get(name, {}).get("knn"), time_summary.get(floor_name(method), {}).get("knn")
        if ours and floor:
            margin, noise = ours["mean"] - floor["mean"], max(ours["std"], floor["std"])
            floors.append(
                {
                    "method": name,
                    "floor": floor_name(method),
                    "margin": margin,
                    "seed_std": noise,
                    "seeds": min(ours["n"], floor["n"]),
                    "beats_floor": bool(margin > noise and min(ours["n"], floor["n"]) >= 2),
                }
            )
        for claim, protocols in method.claims:
            for protocol in protocols:
                ours, theirs = (time_summary.get(r, {}).get(protocol) for r in (name, method.base))
                if ours and theirs:
                    diff, noise = ours["mean"] - theirs["mean"], max(ours["std"], theirs["std"])
                    n = min(ours["n"], theirs["n"])
                    outcome = "reproduced" if diff > noise and n >= 2 else "not reproduced"
                    if n < 2:
                        outcome += " (1 seed: no spread measured)"
                    claims.append(
                        {"claim": claim, "method": name, "base": method.base, "protocol": protocol}
                        | {"difference": diff, "seed_std": noise, "seeds": n, "outcome": outcome}
                    )
    return floors, claims


def bar_chart(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = summary.get("time", {})
    names = list(runs)
    protocols = [p for p in ("knn", "linear", "dense") if any(p in runs[n] for n in names)]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(names)), 4.2))
    width = 0.8 / len(protocols)
    for i, protocol in enumerate(protocols):
        mean = [100 * runs[n][protocol]["mean"] if protocol in runs[n] else 0 for n in names]
        std = [100 * runs[n][protocol]["std"] if protocol in runs[n] else 0 for n in names]
        x = np.arange(len(names)) + (i - (len(protocols) - 1) / 2) * width
        label = {"knn": "k-NN top-1", "linear": "linear probe top-1", "dense": "dense mIoU"}[protocol]
        ax.bar(x, mean, width, yerr=std, capsize=2, label=label)
    ax.axhline(10, color="gray", lw=0.8, ls="--", label="chance (10 classes)")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("digits (k-NN, linear) and digit-scenes (dense) after the same wall-clock pre-training budget")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print(row: dict) -> None:
    value = f"top-1 {100 * row['top1']:.2f}%" if "top1" in row else f"mIoU {row['mean_iou']:.2f}%"
    print(f"[{row['budget']}] {row['run']} seed {row['seed']} {row['protocol']}: {value}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--budget_minutes", type=float, default=1.0, help="pre-training minutes per method and seed")
    parser.add_argument("--seeds", default="0,1", help="seeds of the wall-clock budget")
    parser.add_argument("--images_seeds", default="0", help="seeds of the images-seen budget ('' to skip it)")
    parser.add_argument("--probe_epochs", type=int, default=100)
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    parser.add_argument("--recalibrate", action="store_true", help="measure each method's images/s again")
    parser.add_argument("--output", default=str(RESULTS / "quality.json"))
    parser.add_argument("--chart", default=str(RESULTS / "quality.png"))
    args = parser.parse_args()
    names = args.methods.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    names = list(dict.fromkeys([METHODS[n].needs for n in names if METHODS[n].needs] + names))  # bases first
    seeds = [int(s) for s in args.seeds.split(",")]
    images_seeds = [int(s) for s in args.images_seeds.split(",") if s]
    bench, rows, runs = Bench(args), [], []
    start = time.perf_counter()

    def record(budget: str, run: str, seed: int, results: list[dict], info: dict | None = None) -> None:
        for r in results:
            row = {"budget": budget, "run": run, "seed": seed, **(info or {}), **r}
            rows.append(row)
            _print(row)

    for seed in seeds:
        for name in names:
            info = bench.pretrain(name, seed, "time")
            runs.append({"budget": "time", "method": name, "seed": seed, **info})
            record("time", name, seed, bench.evaluate(info["export"], METHODS[name], seed), {"steps": info["steps"]})
    floors = {floor_name(METHODS[n]): n for n in names}
    for seed in seeds:
        for floor, name in floors.items():  # the same architecture with random weights, same pooling
            if METHODS[name].floor == "mae-init":
                results = bench.evaluate(bench.initial_export("mae", seed), METHODS[name], seed)
            else:
                export = bench.pretrain(name, seed, "time")["export"]
                results = bench.evaluate(export, METHODS[name], seed, random_init=True)
            record("time", floor, seed, results)
    record("time", "raw pixels", 0, raw_pixel_floor(args))
    if images_seeds:
        # every method sees as many images as the slowest one saw in the wall-clock budget (same seed 0 runs)
        bench.images_matched = min(r["images_seen"] for r in runs if r["seed"] == seeds[0])
        for seed in images_seeds:
            for name in names:
                info = bench.pretrain(name, seed, "images")
                runs.append({"budget": "images", "method": name, "seed": seed, **info})
                results = bench.evaluate(info["export"], METHODS[name], seed)
                record("images", name, seed, results, {"steps": info["steps"]})
    summary = summarise(rows)
    floor_checks, claims = verdicts(summary)
    report = {
        "benchmark": "pre-train on digit-scenes (train); k-NN and linear probe on digits (test), dense probe on "
        "digit-scenes (test)",
        "budget_minutes": args.budget_minutes,
        "probe_epochs": args.probe_epochs,
        "seeds": seeds,
        "images_seeds": images_seeds,
        "images_matched": getattr(bench, "images_matched", None),
        "calibration_images_per_second": {n: bench.calibration[n] for n in names if n in bench.calibration},
        "methods": {
            n: {"config": f"examples/configs/{m.config}", "args": list(m.args), "pool": m.pool, "floor": floor_name(m)}
            for n, m in METHODS.items()
            if n in names
        },
        "runs": runs,
        "rows": rows,
        "summary": summary,
        "floors": floor_checks,
        "claims": claims,
        "seconds": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    bar_chart(summary, Path(args.chart))
    print(f"wrote {output} and {args.chart} ({report['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
