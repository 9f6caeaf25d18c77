"""Quality tables (the README's compact one, docs/benchmarks.md's) and k-NN curves from benchmarks/results/quality.

Reads whatever `benchmarks/quality.py` has written (any subset of methods, datasets and seeds):
`quality/<dataset>/<method>_seed<S>.json` (one pre-training run, its export and its calibrated floor) and
`quality/raw_pixels.json` (k-NN and linear probe on the evaluation view's pixels). All accuracies are in percent.

Acceptance of a method (on its metric: the linear probe for the MAE family, whose features are made for a probe,
k-NN for the others): Δ = mean over seeds of the export minus mean of its calibrated floor (the run's own step-0
encoder, BatchNorm statistics from the evaluation set), and the method learns when Δ ≥ 10 points and
Δ > 2 x the larger seed std (sample std; it needs 2 seeds). The k-NN methods are also compared with raw pixels.
"""

import json
import statistics
from pathlib import Path


METHODS = ("mae", "asl", "tec", "byol", "msbreg", "dino", "selfpatch")  # report order
METRIC = {"mae": "linear", "asl": "linear", "tec": "linear"}  # the others: knn
PROTOCOL_NAMES = {"knn": "k-NN", "linear": "linear probe"}
D = "\N{EN DASH}"  # an empty cell
MIN_DELTA = 10.0  # points above the floor
CLAIMS = (  # (method, base, the paper's claim)
    ("asl", "mae", "ASL > MAE (Tab. 1, 7)"),
    ("tec", "mae", "TEC > its MAE base (Tab. 2, 4)"),
    ("msbreg", "byol", "MSBReg > BYOL (Supp. Tab. 5)"),
    ("selfpatch", "dino", "SelfPatch > DINO (Tab. 1, 3)"),
)


def metric(method: str) -> str:
    return METRIC.get(method, "knn")


def load_results(results_dir: Path) -> dict[str, dict[str, list[dict]]]:
    """`{dataset: {method: [result per seed, by seed]}}` of every result file, methods in report order."""
    found: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(results_dir.glob("*/*_seed*.json")):
        record = json.loads(path.read_text())
        found.setdefault(record["dataset"], {}).setdefault(record["method"], []).append(record)
    return {
        dataset: {m: sorted(runs[m], key=lambda r: r["seed"]) for m in METHODS if m in runs}
        for dataset, runs in sorted(found.items())
    }


def score(record: dict, protocol: str, backbone: str = "pretrained") -> float:
    """Top-1 (percent) of the export (`pretrained`) or its floor (`random_init`) under `protocol`."""
    return next(r["top1"] for r in record["evaluation"] if r["protocol"] == protocol and r["backbone"] == backbone)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (None for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def acceptance(runs: list[dict], protocol: str) -> dict:
    """Δ of the export over its floor, and the verdict (Δ ≥ 10 points and Δ > 2 x the larger seed std)."""
    ours, ours_std = mean_std([score(r, protocol) for r in runs])
    floor, floor_std = mean_std([score(r, protocol, "random_init") for r in runs])
    delta = ours - floor
    noise = None if ours_std is None else max(ours_std, floor_std)
    learns = noise is not None and delta >= MIN_DELTA and delta > 2 * noise
    return {"mean": ours, "std": ours_std, "floor": floor, "delta": delta, "seed_std": noise, "learns": learns}


def claim(runs: dict[str, list[dict]], method: str, base: str, protocol: str) -> dict | None:
    """Difference of means of `method` over `base` and whether it exceeds the larger seed std; None if unmeasured."""
    if method not in runs or base not in runs:
        return None
    (ours, ours_std), (theirs, theirs_std) = (mean_std([score(r, protocol) for r in runs[m]]) for m in (method, base))
    diff = ours - theirs
    if ours_std is None or theirs_std is None:
        return {"difference": diff, "seed_std": None, "outcome": "not measured (1 seed: no seed std)"}
    noise = max(ours_std, theirs_std)
    return {"difference": diff, "seed_std": noise, "outcome": "reproduced" if diff > noise else "not reproduced"}


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _steps(runs: list[dict]) -> str:
    """Step counts of the seeds, † when a run does not follow its preset (`--max_steps` or `--extra`)."""
    steps = "/".join(str(s) for s in sorted({r["steps"] for r in runs}))
    return steps + (" †" if any(r["max_steps_override"] or r["extra"] for r in runs) else "")


def _main_table(runs: dict[str, list[dict]], raw: dict | None) -> list[str]:
    lines = [
        "| method | metric | floor % | result % | Δ (points) | learns: Δ ≥ 10 and Δ > 2 × seed std | "
        "beats raw pixels (k-NN) | steps | seeds | minutes per seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    usual = usual_threads(runs)
    for method, records in runs.items():
        protocol = metric(method)
        a = acceptance(records, protocol)
        verdict = "yes" if a["learns"] else ("**no** (1 seed)" if a["seed_std"] is None else "**no**")
        beats = "–"
        if protocol == "knn" and raw is not None:
            beats = "yes" if a["mean"] > raw["knn"] else "**no**"
        cells = [
            f"{PROTOCOL_NAMES[protocol]} ({records[0]['pool']})",
            f"{a['floor']:.2f}",
            _pm(a["mean"], a["std"]),
            f"{a['delta']:+.2f}",
            verdict,
            beats,
            _steps(records),
            str(len(records)),
            _minutes_cell(records, usual),
        ]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return lines


def _probe_table(runs: dict[str, list[dict]], raw: dict | None) -> list[str]:
    lines = [
        "| method | k-NN % | k-NN floor % | linear % | linear floor % | online k-NN at the end % (floor) | img/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, records in runs.items():
        cells = [
            _pm(*mean_std([score(r, p, backbone) for r in records]))
            for p in ("knn", "linear")
            for backbone in ("pretrained", "random_init")
        ]
        online = [r["knn_curve"][-1][1] for r in records if r["knn_curve"]]
        floors = [r["knn_floor"] for r in records if r["knn_floor"] is not None]
        online_cell = f"{_pm(*mean_std(online))} ({statistics.mean(floors):.2f})" if online and floors else "–"
        speed = statistics.mean(r["images_per_sec"] for r in records)
        lines.append(f"| {method} | {' | '.join(cells)} | {online_cell} | {speed:.0f} |")
    if raw is not None:
        lines.append(f"| raw pixels | {raw['knn']:.2f} | – | {raw['linear']:.2f} | – | – | – |")
    return lines


def _claims_table(runs: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| paper claim | protocol | measured difference (points) | seed std | outcome |",
        "|---|---|---|---|---|",
    ]
    for method, base, text in CLAIMS:
        for protocol in ("knn", "linear"):
            c = claim(runs, method, base, protocol)
            if c is None:
                lines.append(f"| {text} | {PROTOCOL_NAMES[protocol]} | – | – | not measured |")
                continue
            std = "–" if c["seed_std"] is None else f"{c['seed_std']:.2f}"
            lines.append(f"| {text} | {PROTOCOL_NAMES[protocol]} | {c['difference']:+.2f} | {std} | {c['outcome']} |")
    return lines


def _machines(records: list[dict]) -> list[str]:
    """The machines the runs ran on, e.g. `AMD EPYC, 1 torch thread`."""
    return sorted(
        {
            f"{r['machine']['cpu']}, {r['machine']['torch_threads']} torch thread"
            + ("s" if r["machine"]["torch_threads"] != 1 else "")
            for r in records
        }
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _threads(record: dict) -> int:
    return record["machine"]["torch_threads"]


def usual_threads(runs: dict[str, list[dict]]) -> int | None:
    """The torch thread count most runs used (the README's table names the seeds that used another)."""
    counts = [_threads(r) for records in runs.values() for r in records]
    return max(counts, key=counts.count) if counts else None


def _minutes_cell(records: list[dict], usual: int | None) -> str:
    """Mean minutes per seed, or each seed's minutes when some seed ran with another thread count than `usual`."""
    timed = [r for r in records if r.get("wall_seconds")]
    if not timed:
        return D
    if all(_threads(r) == usual for r in timed):
        return f"{statistics.mean(r['wall_seconds'] / 60 for r in timed):.1f}"
    return " / ".join(
        f"{r['wall_seconds'] / 60:.1f}" + ("" if _threads(r) == usual else f" ({_plural(_threads(r), 'thread')})")
        for r in timed
    )


def _judged_on(method: str, records: list[dict] | None) -> str:
    """The metric a method is judged on, with the pooling its runs used (when there are runs)."""
    name = PROTOCOL_NAMES[metric(method)]
    return f"{name} ({records[0]['pool']})" if records else name


def compact_rows(runs: dict[str, list[dict]]) -> list[dict]:
    """One row per method of `METHODS` (methods without results included): the README's compact table as data.

    Keys: method, preset, steps, metric, floor, result, std, delta, seed_std, learns, seeds, minutes (None when
    the method has no result, or its runs did not record the value).
    """
    rows = []
    for method in METHODS:
        records = runs.get(method)
        row = {"method": method, "metric": _judged_on(method, records), "seeds": len(records or [])}
        if not records:
            keys = ("preset", "steps", "floor", "result", "std", "delta", "seed_std", "learns", "minutes")
            rows.append({**row, **dict.fromkeys(keys)})
            continue
        a = acceptance(records, metric(method))
        minutes = [r["wall_seconds"] / 60 for r in records if r.get("wall_seconds")]
        presets = sorted({r.get("preset") or f"{method}-cpu" for r in records})
        row.update(
            preset=", ".join(presets),
            steps=_steps(records),
            floor=a["floor"],
            result=a["mean"],
            std=a["std"],
            delta=a["delta"],
            seed_std=a["seed_std"],
            learns=a["learns"],
            minutes=statistics.mean(minutes) if minutes else None,
        )
        rows.append(row)
    return rows


def _verdict(row: dict) -> str:
    if row["result"] is None:
        return "no results yet"
    if row["learns"]:
        return "yes"
    if row["delta"] < MIN_DELTA:
        return f"**no** (Δ < {MIN_DELTA:g})"
    if row["seed_std"] is None:
        return "**no** (1 seed)"
    return "**no** (Δ ≤ 2 × seed std)"


def compact_table(runs: dict[str, list[dict]]) -> list[str]:
    """The README's results table: per method its preset, steps, the metric it is judged on against its calibrated
    floor, Δ, the verdict, seeds and wall time per seed; methods without results get a row that says so."""
    usual = usual_threads(runs)
    lines = [
        "| method | preset | steps | judged on | floor % | result % | Δ (points) | learns | seeds | minutes per seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in compact_rows(runs):
        if row["result"] is None:
            cells = [row["metric"], D, D, D, _verdict(row), "0", D]
            lines.append(f"| {row['method']} | `{row['method']}-cpu` | {D} | {' | '.join(cells)} |")
            continue
        minutes = _minutes_cell(runs[row["method"]], usual)
        cells = [
            f"`{row['preset']}`",
            row["steps"],
            row["metric"],
            f"{row['floor']:.2f}",
            _pm(row["result"], row["std"]),
            f"{row['delta']:+.2f}",
            _verdict(row),
            str(row["seeds"]),
            minutes,
        ]
        lines.append(f"| {row['method']} | {' | '.join(cells)} |")
    return lines


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def shortfalls(runs: dict[str, list[dict]], raw: dict | None = None) -> list[str]:
    """Plain sentences naming the methods without results, those that do not clear their floor by 10 points (or
    within the seed noise, or on one seed), and the k-NN methods that raw pixels beat."""
    rows = compact_rows(runs)
    groups = {
        f"Less than {MIN_DELTA:g} points above the floor": [
            f"{r['method']} ({r['delta']:+.2f})" for r in rows if r["result"] is not None and r["delta"] < MIN_DELTA
        ],
        "Not more than twice the seed std above the floor": [
            f"{r['method']} ({r['delta']:+.2f}, seed std {r['seed_std']:.2f})"
            for r in rows
            if r["result"] is not None and r["delta"] >= MIN_DELTA and r["seed_std"] is not None and not r["learns"]
        ],
        "One seed only, so no verdict": [
            r["method"] for r in rows if r["result"] is not None and r["delta"] >= MIN_DELTA and r["seed_std"] is None
        ],
        "No results yet": [r["method"] for r in rows if r["result"] is None],
    }
    out = [f"{title}: {', '.join(names)}." for title, names in groups.items() if names]
    if raw is not None:
        below = [
            r["method"]
            for r in rows
            if r["result"] is not None and "k-NN" in r["metric"] and r["result"] <= raw["knn"]
        ]
        if below:
            out.append(
                f"Raw pixels of the evaluation view reach k-NN {raw['knn']:.2f} %, above {_and(below)}: at this "
                "scale a method's learning shows against its floor, not against pixels."
            )
    return out


def above_raw_pixels(runs: dict[str, list[dict]], raw: dict | None) -> list[str]:
    """The k-NN methods whose mean result is above raw pixels' k-NN, as `method (mean ± std %, n seeds)`."""
    if raw is None:
        return []
    return [
        f"{r['method']} ({_pm(r['result'], r['std'])} %, {_plural(r['seeds'], 'seed')})"
        for r in compact_rows(runs)
        if r["result"] is not None and "k-NN" in r["metric"] and r["result"] > raw["knn"]
    ]


def primary_dataset(all_runs: dict[str, dict[str, list[dict]]], default: str = "digit-scenes") -> str | None:
    """The pre-training dataset of the README's table: `default` when it has results, else the one with most runs."""
    if default in all_runs:
        return default
    return max(all_runs, key=lambda d: sum(len(s) for s in all_runs[d].values()), default=None)


def compact_section(results_dir: Path, link_prefix: str, details_link: str) -> str:
    """The README's results: one table (every method, its metric against its calibrated floor), the shortfalls in
    plain words, and the online k-NN curves of the same dataset.

    Args:
        results_dir: `benchmarks/results/quality`.
        link_prefix: Path of `results_dir` as seen from the README (for the PNG link).
        details_link: Link to the page with every table (docs/benchmarks.md as seen from the README).
    """
    all_runs, raw = load_results(results_dir), raw_pixels(results_dir)
    dataset = primary_dataset(all_runs)
    if dataset is None:
        return (
            f"No quality results yet: `make bench-quality` writes them to `benchmarks/results/quality/` "
            f"([{details_link}]({details_link}))."
        )
    runs = all_runs[dataset]
    records = [r for seeds in runs.values() for r in seeds]
    cpus, threads = sorted({r["machine"]["cpu"] for r in records}), usual_threads(runs)
    out = [
        f"Each method pre-trained on `{dataset}` with its CPU preset (`--preset <method>-cpu`), exported, and judged "
        f"on `{records[0]['eval_dataset']}` against its **calibrated floor** (the same network at step 0, BatchNorm "
        "statistics from the data): k-NN for BYOL, MSBReg, DINO and SelfPatch, a linear probe on mean-pooled tokens "
        f"for MAE, ASL and TEC. A method learns when Δ = result − floor ≥ {MIN_DELTA:g} points and Δ > 2 × the seed "
        f"std (mean ± sample std over seeds). Minutes per seed: the pre-training run on {', '.join(cpus)} with "
        f"{_plural(threads, 'torch thread')}, unless the cell names another thread count (TEC's without the MAE run "
        "it learns from).",
        "",
        *compact_table(runs),
        "",
    ]
    sentences = shortfalls(runs, raw)
    if sentences:
        out += [" ".join(sentences), ""]
    others = [d for d in all_runs if d != dataset]
    if others:
        out += [
            "Also pre-trained on "
            + ", ".join(f"`{d}` ({', '.join(all_runs[d])})" for d in others)
            + f": every table, the paper claims re-measured and the speed benchmark are in [{details_link}]"
            f"({details_link}).",
            "",
        ]
        above = [f"`{d}`: {_and(names)}" for d in others if (names := above_raw_pixels(all_runs[d], raw))]
        if above:
            out += [f"Above raw pixels' k-NN ({raw['knn']:.2f} %) when pre-trained on {'; '.join(above)}.", ""]
    else:
        out += [
            f"Every table, the paper claims re-measured and the speed benchmark: [{details_link}]({details_link}).",
            "",
        ]
    out.append(
        f"![online k-NN of every method during pre-training on {dataset}]({link_prefix}/{curves_png(Path(), dataset)})"
    )
    return "\n".join(out)


def raw_pixels(results_dir: Path) -> dict | None:
    """`{"knn": top-1 %, "linear": top-1 %, ...}` of `raw_pixels.json`, or None."""
    path = results_dir / "raw_pixels.json"
    return json.loads(path.read_text()) if path.is_file() else None


def curves_png(results_dir: Path, dataset: str) -> Path:
    return results_dir / f"knn_curves_{dataset}.png"


def quality_section(results_dir: Path, link_prefix: str) -> str:
    """docs/benchmarks.md's quality section: per dataset the acceptance table, every probe, the claims and the curves.

    Args:
        results_dir: `benchmarks/results/quality`.
        link_prefix: Path of `results_dir` as seen from the page the section goes into (for the PNG links).
    """
    all_runs, raw = load_results(results_dir), raw_pixels(results_dir)
    if not all_runs:
        return (
            "**Representation quality**: no results yet (`python benchmarks/quality.py` writes them to "
            "`benchmarks/results/quality/`; earlier formats are in `benchmarks/results/archive/`)."
        )
    records = [r for runs in all_runs.values() for seeds in runs.values() for r in seeds]
    machines = _machines(records)
    any_run = records[0]
    raw_text = (
        f" Raw pixels of the evaluation view: k-NN {raw['knn']:.2f} %, linear probe {raw['linear']:.2f} %."
        if raw
        else ""
    )
    out = [
        f"**Representation quality** — each method pre-trains with its CPU preset (`ssl-hf pretrain --method M "
        f"--preset M-cpu`, `src/ssl_hf/cpu_presets.py`; TEC learns from the MAE run of the same seed), is exported "
        f"and probed on `{any_run['eval_dataset']}` (test split): weighted k-NN (k = 20, T = 0.07) and a linear probe "
        f"(BN without affine + linear, SGD {any_run['probe_epochs']} epochs), next to its calibrated floor: the run's "
        "own encoder at step 0 with BatchNorm statistics estimated on the training images. Features: the token mean "
        "for MAE, ASL, TEC and SelfPatch, the cls token (ResNet: pooled output) for the others. A method learns when, "
        f"on its metric, Δ = result − floor ≥ {MIN_DELTA:g} points and Δ > 2 × the larger seed std (sample std over "
        f"seeds, so it needs 2 seeds); mean ± std over seeds.{raw_text} `benchmarks/quality.py` on "
        f"{'; '.join(machines)}; † marks runs that did not "
        "follow their preset (`--max_steps`/`--extra`). Earlier results (example configs, fixed wall-clock budgets) "
        "are in `benchmarks/results/archive/`.",
    ]
    for dataset, runs in all_runs.items():
        out += [
            "",
            f"Pre-trained on `{dataset}`:",
            "",
            *_main_table(runs, raw),
            "",
            "Every probe (floors: the runs' calibrated step-0 encoders; the online k-NN runs during pre-training on "
            "the preset's subset of the evaluation set):",
            "",
            *_probe_table(runs, raw),
            "",
            "The papers' claims at this scale (reproduced when the difference exceeds the larger seed std):",
            "",
            *_claims_table(runs),
        ]
        out += ["", f"![online k-NN of every method during pre-training]({link_prefix}/{curves_png(Path(), dataset)})"]
    return "\n".join(out)


def calibrated_curve(curve: list, floor: float | None) -> dict[int, float]:
    """`{step: top-1}` with step 0 at the calibrated floor: the step-0 value of a network with BatchNorm runs its
    fresh statistics (mean 0, variance 1) and is not comparable with the later points."""
    points = dict(curve)
    if floor is not None and 0 in points:
        points[0] = floor
    return points


def plot_knn_curves(runs: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Online k-NN top-1 against the step: per method the mean over seeds (thick, at the steps every seed logged),
    each seed (thin), and the mean calibrated floor (dashed); step 0 is drawn at the calibrated floor."""
    from matplotlib.figure import Figure

    from ssl_hf.evaluation.plots import _save

    fig = Figure(figsize=(8.0, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for method, records in runs.items():
        colour = f"C{METHODS.index(method)}"  # a method keeps its colour whichever methods are present
        curves = [calibrated_curve(r["knn_curve"], r["knn_floor"]) for r in records if r["knn_curve"]]
        for curve in curves:
            ax.plot(list(curve), list(curve.values()), color=colour, linewidth=0.7, alpha=0.35)
        common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if common:
            ax.plot(
                common,
                [statistics.mean(c[s] for c in curves) for s in common],
                color=colour,
                linewidth=2,
                label=f"{method} ({len(curves)} seed{'s' if len(curves) > 1 else ''})",
            )
        floors = [r["knn_floor"] for r in records if r["knn_floor"] is not None]
        if floors:
            ax.axhline(statistics.mean(floors), color=colour, linestyle="--", linewidth=0.9)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("online k-NN top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def write_curves(results_dir: Path) -> list[Path]:
    """Draws `knn_curves_<dataset>.png` for every dataset with results."""
    title = (
        "online k-NN during pre-training on {}\n(thick: mean over seeds; thin: each seed; dashed: calibrated floors)"
    )
    return [
        plot_knn_curves(runs, curves_png(results_dir, dataset), title.format(dataset))
        for dataset, runs in load_results(results_dir).items()
    ]
