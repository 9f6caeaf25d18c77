"""Sustainable SSL, end to end: MAE -> TEC (base = that MAE) -> TEC (base = that TEC), each evaluated on `digits`.

Every round pre-trains on the built-in `digit-scenes` set, exports the encoder as a plain `ViTModel`, and the next
round learns from that export (TEC's "sustainable" chain, paper Tab. 10). Each export is then evaluated with a
weighted k-NN and a linear probe on frozen cls features of `digits`.

    python examples/sustainable_chain.py                      # ViT-Tiny/4, 800 steps per round (~15 min on 2 cores)
    python examples/sustainable_chain.py --max_steps 200 --workdir runs/chain
    accelerate launch examples/sustainable_chain.py ...       # each round runs on every process

Re-running continues where it stopped: finished rounds are kept, an interrupted one resumes from its checkpoint.
"""

import argparse
import json
from pathlib import Path

from ssl_hf.cli import main as ssl_hf


CONFIGS = Path(__file__).parent / "configs"


def run_round(name: str, config: Path, run: Path, extra: list[str]) -> Path:
    """Pre-trains one round (resumable) and exports its encoder; returns the export folder."""
    export = run / "export"
    if not (export / "config.json").is_file():
        ssl_hf(["pretrain", "--config", str(config), "--output_dir", str(run), *extra])
        ssl_hf(["export", str(run / "final"), "--output_dir", str(export), "--repo_id", f"ssl-hf/{name}"])
    return export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/chain", help="One sub-folder per round.")
    parser.add_argument("--max_steps", type=int, help="Steps per round (default: the configs' 800).")
    parser.add_argument("--rounds", type=int, default=2, help="TEC rounds after the MAE base (default 2).")
    parser.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Extra `--field value` options for every round (after `--`), e.g. -- --hidden_size 64",
    )
    args = parser.parse_args()
    workdir = Path(args.workdir)
    extra = [] if args.max_steps is None else ["--max_steps", str(args.max_steps), "--save_steps", str(args.max_steps)]
    extra += ["--resume_from_checkpoint", "latest", *args.overrides]

    chain = [("round0-mae", run_round("round0-mae", CONFIGS / "mae_tiny.yaml", workdir / "round0-mae", extra))]
    for i in range(1, args.rounds + 1):
        name = f"round{i}-tec"
        base = chain[-1][1]
        chain.append(
            (name, run_round(name, CONFIGS / "tec_tiny.yaml", workdir / name, [*extra, "--base_model", str(base)]))
        )

    summary = []
    for name, export in chain:
        record = {"round": name, "export": str(export)}
        if args.evaluate:
            report = export / "eval_digits.json"
            if not report.is_file():
                ssl_hf(["evaluate", str(export), "--protocol", "knn,linear", "--output", str(report), "--update_card"])
            for r in json.loads(report.read_text())["results"]:
                if "top1" in r:  # k-NN and linear probe (the dense probe reports mIoU)
                    record[r["protocol"]] = r["top1"]
        summary.append(record)
    (workdir / "chain.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{'round':<14}{'base model':<40}{'k-NN':>8}{'linear':>8}")
    for i, record in enumerate(summary):
        base = summary[i - 1]["export"] if i else "-"
        knn, lin = (f"{100 * record[k]:.2f}%" if k in record else "-" for k in ("knn", "linear"))
        print(f"{record['round']:<14}{base[-38:]:<40}{knn:>8}{lin:>8}")
    print(f"wrote {workdir / 'chain.json'}")


if __name__ == "__main__":
    main()
