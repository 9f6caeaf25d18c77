"""Recipe sweeps with the online k-NN monitor: one pre-training run per variant, its curve written as it finishes.

Each variant is `ssl-hf pretrain` with the method's base arguments plus its own flags, run in a fresh process with
`--eval_every`. The result file `benchmarks/results/sweeps/<sweep>/<variant>.json` holds the flags, the k-NN curve
(step, top-1), the loss curve, the collapse statistics at the end, images/s and wall time. Finished variants are
skipped on a re-run, so a sweep can be stopped and continued.

    python benchmarks/sweep.py benchmarks/sweeps/byol_cpu.yaml            # every variant of the file
    python benchmarks/sweep.py benchmarks/sweeps/byol_cpu.yaml --only lr1  # some of them

The YAML file: `sweep: <name>`, `method: <m>`, `base: {flag: value}` (shared flags), `variants: {name: {flag: value}}`.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml


ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "sweeps"
ALARM_KEYS = (
    "embedding_std",
    "embedding_std_ref",
    "embedding_rank",
    "teacher_entropy",
    "teacher_entropy_max",
    "teacher_batch_entropy",
    "center_norm",
    "align_to_mae",
)


def _flags(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            value = json.dumps(list(value))
        out += [f"--{key}", str(value)]
    return out


def summarise(run_dir: Path, seconds: float, flags: dict) -> dict:
    """The result record of a finished run directory."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    knn = [(r["step"], r["knn_top1"]) for r in lines if "knn_top1" in r]
    steps = [r for r in lines if "loss" in r]
    speeds = [r["images_per_sec"] for r in steps[2:]] or [r["images_per_sec"] for r in steps]
    last = steps[-1] if steps else {}
    record = json.loads((run_dir / "args.json").read_text())
    return {
        "flags": flags,
        "steps": last.get("step", 0),
        "knn_floor": next((r["knn_floor"] for r in lines if "knn_floor" in r), None),
        "knn_curve": knn,
        "knn_final": knn[-1][1] if knn else None,
        "knn_best": max((v for step, v in knn if step > 0), default=None),
        "loss_curve": [(r["step"], round(r["loss"], 5)) for r in steps[:: max(1, len(steps) // 50)]],
        "final_stats": {k: last[k] for k in ALARM_KEYS if k in last},
        "images_per_sec_median": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "knn_seconds_total": round(sum(r.get("knn_seconds", 0) for r in lines), 1),
        "wall_seconds": round(seconds, 1),
        "peak_learning_rate": record["derived"]["peak_learning_rate"],
        "mixed_precision": record["training"]["mixed_precision"],
        "mixed_precision_auto": record["derived"].get("mixed_precision_auto"),
    }


def _stop_reason(metrics: Path, stop_step: int | None, margin: float = 2.0) -> str | None:
    """A reason to stop a variant early: by `stop_step` its online k-NN never rose `margin` points above its
    calibrated floor (`knn_floor`, the step-0 encoder with BatchNorm statistics from the evaluation images)."""
    if stop_step is None or not metrics.is_file():
        return None
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if '"knn_top1"' in line]
    if not lines or lines[-1]["step"] < stop_step:
        return None
    floor = lines[0].get("knn_floor", lines[0]["knn_top1"])
    best = max(r["knn_top1"] for r in lines[1:]) if len(lines) > 1 else -1.0
    if best < floor + margin:
        return f"online k-NN at most {best:.1f} % by step {lines[-1]['step']}, floor {floor:.1f} %"
    return None


def probe(run_dir: Path, method: str) -> dict:
    """k-NN and linear probe on `digits` of a finished run's export and of its calibrated floor (method pooling)."""
    import ssl_hf
    from ssl_hf.evaluation import evaluate_backbone
    from ssl_hf.export import export_pretrained

    export = export_pretrained(run_dir / "final", run_dir / "export")
    out = {"pool": ssl_hf.get_method(method).feature_pool}
    for floor in (False, True):
        rows = evaluate_backbone(export, "digits", protocols=("knn", "linear"), pool=out["pool"], random_init=floor)
        key = "floor" if floor else "export"
        out[key] = {row["protocol"]: round(100 * row["top1"], 2) for row in rows}
        if floor:
            out["floor_label"] = rows[0].get("floor")
    return out


def run_variant(method: str, name: str, flags: dict, out: Path, workdir: Path, stop_step: int | None = None) -> dict:
    run_dir = workdir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "ssl_hf.cli", "pretrain", "--method", method, "--output_dir", str(run_dir)]
    command += _flags(flags)
    start = time.perf_counter()
    stopped = None
    with (workdir / f"{name}.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while process.poll() is None:
            time.sleep(5)
            stopped = stopped or _stop_reason(run_dir / "metrics.jsonl", stop_step)
            if stopped:
                process.terminate()
                process.wait()
    seconds = time.perf_counter() - start
    if stopped:
        result = {**summarise(run_dir, seconds, flags), "stopped_early": stopped}
    elif process.returncode:
        result = {"flags": flags, "error": (workdir / f"{name}.log").read_text()[-2000:], "wall_seconds": seconds}
    else:
        result = summarise(run_dir, seconds, flags)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"method": method, "variant": name, **result}, indent=1) + "\n")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # keep final/ and metrics, not optimiser state
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="YAML file of the sweep.")
    parser.add_argument("--only", nargs="*", help="Variants to run (all when omitted).")
    parser.add_argument("--workdir", default="/tmp/ssl_hf_sweeps", help="Where the runs are written.")
    parser.add_argument("--force", action="store_true", help="Re-run finished variants.")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="Also probe each finished variant (k-NN and linear on digits, export and calibrated floor); finished "
        "variants without a probe get one from their run directory.",
    )
    parser.add_argument(
        "--stop_step",
        type=int,
        default=None,
        help="Stop a variant whose online k-NN has not risen 2 points above its calibrated floor by this step.",
    )
    args = parser.parse_args()
    spec = yaml.safe_load(Path(args.spec).read_text())
    workdir = Path(args.workdir) / spec["sweep"]
    workdir.mkdir(parents=True, exist_ok=True)
    for name, flags in spec["variants"].items():
        if args.only and name not in args.only:
            continue
        out = RESULTS / spec["sweep"] / f"{name}.json"
        if out.exists() and not args.force:
            record = json.loads(out.read_text())
            if args.probe and "probe" not in record and (workdir / name / "final").is_dir():
                record["probe"] = probe(workdir / name, spec["method"])
                out.write_text(json.dumps(record, indent=1) + "\n")
                print(f"{name}: probed {record['probe']}", flush=True)
            else:
                print(f"{name}: done already ({out})", flush=True)
            continue
        merged = {**spec.get("base", {}), **(flags or {})}
        result = run_variant(spec["method"], name, merged, out, workdir, args.stop_step)
        if args.probe and "error" not in result and (workdir / name / "final").is_dir():
            result["probe"] = probe(workdir / name, spec["method"])
            out.write_text(json.dumps({"method": spec["method"], "variant": name, **result}, indent=1) + "\n")
        if "error" in result:
            print(f"{name}: FAILED after {result['wall_seconds']:.0f} s, see {workdir / name}.log", flush=True)
        else:
            curve = f"floor {result['knn_floor']} | " + " ".join(f"{s}:{v:.1f}" for s, v in result["knn_curve"])
            note = f" | stopped: {result['stopped_early']}" if result.get("stopped_early") else ""
            print(
                f"{name}: knn {curve} | {result['wall_seconds']:.0f} s, {result['images_per_sec_median']} img/s{note}"
            )


if __name__ == "__main__":
    main()
