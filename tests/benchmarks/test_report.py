"""benchmarks/report.py: the README's compact table is the result files' numbers, and the README keeps its rules."""

import json
import re
import statistics

import pytest
from bench_scripts import load


report = load("report")
report_quality = load("report_quality")


def _readme_rows() -> dict[str, list[str]]:
    """The compact table of the committed README: method -> its cells."""
    _, section, _ = report._split(report.README)
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}  # row 0: the header


def test_readme_rows_are_the_result_files_numbers():
    """Recomputed here from the JSON files, independently of report_quality: floor, result, Δ, seeds, minutes."""
    dataset = report_quality.primary_dataset(report_quality.load_results(report.QUALITY))
    rows = _readme_rows()
    assert list(rows) == list(report_quality.METHODS)
    for method, cells in rows.items():
        paths = sorted((report.QUALITY / dataset).glob(f"{method}_seed*.json"))
        if not paths:
            assert "no results yet" in cells
            continue
        records = [json.loads(p.read_text()) for p in paths]
        protocol = "linear" if method in ("mae", "asl", "tec") else "knn"

        def top1(record, backbone, protocol=protocol):
            return next(
                r["top1"] for r in record["evaluation"] if r["protocol"] == protocol and r["backbone"] == backbone
            )

        result = statistics.mean(top1(r, "pretrained") for r in records)
        floor = statistics.mean(top1(r, "random_init") for r in records)
        preset, steps, metric, floor_cell, result_cell, delta_cell, _, seeds, minutes = cells
        assert preset == f"`{records[0]['preset']}`"
        assert steps.split()[0] == "/".join(str(s) for s in sorted({r["steps"] for r in records}))
        assert metric.startswith("linear probe" if protocol == "linear" else "k-NN")
        assert float(floor_cell) == pytest.approx(floor, abs=0.005)
        assert float(result_cell.split(" ± ")[0]) == pytest.approx(result, abs=0.005)
        assert float(delta_cell) == pytest.approx(result - floor, abs=0.01)
        assert int(seeds) == len(records)
        per_seed = [r["wall_seconds"] / 60 for r in records]
        if " / " in minutes:  # seeds run with different thread counts: each seed's minutes
            assert [float(m.split()[0]) for m in minutes.split(" / ")] == pytest.approx(per_seed, abs=0.05)
        else:
            assert float(minutes) == pytest.approx(statistics.mean(per_seed), abs=0.05)


def test_readme_is_short_and_links_resolve():
    assert report.README.read_text().count("\n") <= report.MAX_README_LINES
    assert report.readme_problems() == []


def test_readme_links_every_docs_page():
    text = report.README.read_text()
    for page in ("methods", "options", "data", "evaluation", "export_and_hub", "convert", "learning", "python_api"):
        assert f"(docs/{page}.md)" in text
    assert f"(docs/{report.BENCHMARKS_PAGE.name})" in text


@pytest.mark.parametrize(
    ("line", "flagged"),
    [
        ("about 7 minutes on 2 CPU cores", True),
        ("runs in ~20 s", True),
        ("k-NN reaches 85 % here", True),
        ("a 368 MB checkpoint", True),
        ("ASL is 1.8\N{MULTIPLICATION SIGN} MAE", True),
        ("at 120 img/s", True),
        ("32\N{MULTIPLICATION SIGN}32 images, ResNet-18, 2 CPU cores", False),
        ("ssl-hf pretrain --max_steps 300 --batch_size 64", False),
        ("Python ≥ 3.10, transformers 5.23", False),
    ],
)
def test_hand_typed_measurements_are_found(line, flagged):
    assert bool(report.MEASUREMENT.search(line)) == flagged


def test_broken_links_and_anchors_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## The `--flag` section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [anchor](other.md#the---flag-section) [web](https://example.com) [self](#top)\n"
        "[gone](missing.md) [bad anchor](other.md#nope)\n```\n[in code](nowhere.md)\n```\n# Top\n"
    )
    assert report.broken_links(page) == ["missing.md", "other.md#nope"]


def test_check_fails_on_a_stale_section(tmp_path, monkeypatch, capsys):
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{report.START}\nold\n{report.END}\ntail\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "SECTIONS", {page: {report.BENCH: lambda: "new"}})
    monkeypatch.setattr(report, "readme_problems", list)
    monkeypatch.setattr(report, "write_curves", lambda _: [])
    with pytest.raises(SystemExit, match=r"page\.md out of date"):
        report.main(["--check"])
    report.main([])
    assert page.read_text() == f"intro\n{report.START}\nnew\n{report.END}\ntail\n"
    report.main(["--check"])
    assert "match benchmarks/results" in capsys.readouterr().out


def test_hand_written_text_is_what_lies_outside_the_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"a\n{report.START}\n99 %\n{report.END}\nb\n")
    assert re.sub(r"\s", "", report.hand_written(page)) == "ab"


def test_profile_table_gives_ratios_to_the_group_base(tmp_path):
    report_profile = load("report_profile")

    def model(seconds, gflops, modules):
        setting = {"backbone": "vit-small", "image_size": 32, "patch_size": 4, "batch_size": 64}
        forward = {"forward": {"cpu_ms_per_step": 1000.0}}
        regions = {name: {"cpu_ms_per_step": ms} for name, ms in modules.items()}
        return {"setting": setting, "step_seconds_wall": seconds, "gflops_per_step": gflops, "phases": forward,
                "modules_forward": regions}  # fmt: skip

    profile = {
        "precision": "fp32",
        "threads": 2,
        "timing": {"warmup": 1, "steps": 2},
        "machine": {"cpu": "test CPU"},
        "versions": {"torch": "2"},
        "models": {
            "MAE": model(2.0, 100.0, {"backbone": 200.0, "decoder": 700.0}),
            "ASL": model(3.0, 180.0, {"backbone.encoder": 300.0, "backbone.embeddings": 500.0, "decoder": 600.0}),
        },
    }
    (tmp_path / "profile_mae.json").write_text(json.dumps(profile))
    text = report_profile.profile_section(tmp_path)
    assert (
        "| mae | MAE | vit-small/4 @32, batch 64 | fp32 | 2.00 | 100 | base | base | `decoder`: 0.70 s of 1.00 |"
        in text
    )
    # a child profiled through its own children counts as their sum
    assert (
        "| mae | ASL | vit-small/4 @32, batch 64 | fp32 | 3.00 | 180 | 1.80 | 1.50 | `backbone`: 0.80 s of 1.00 |"
        in text
    )
    assert report_profile.profile_section(tmp_path / "none") == ""


LOG = """# `time make pretrain` on 2 cores, nothing else running (progress bars: last redraw only)
.venv/bin/ssl-hf pretrain --preset msbreg-cpu
INFO ssl_hf.training.loop: Online k-NN at step 0: 36.38 % (calibrated floor: 14.04 %)
pretrain msbreg:  50%|#####     | 150/300 [02:00<02:00, loss=0.5]
pretrain msbreg: 100%|##########| 300/300 [04:00<00:00, loss=0.2]
Pre-training finished: runs/x/final
Loss and online k-NN curves: runs/x/training_curves.png
Exported SmallStemResNetModel (ssl_resnet_small_stem format) to runs/x/export
backbone      protocol      result
pretrained    knn           top-1 33.76 %
random_init   knn           top-1 15.60 %  [floor: MSBReg init at step 0]
Loss and online k-NN curves: runs/x/training_curves.png

real\t7m4.026s
"""


def test_make_pretrain_section_shows_what_it_printed_and_its_wall_time(tmp_path):
    report_make_pretrain = load("report_make_pretrain")
    (tmp_path / "make_pretrain.log").write_text(LOG)
    text = report_make_pretrain.make_pretrain_section(tmp_path, "benchmarks/results/make_pretrain")
    assert text.startswith("Measured: `time make pretrain` on 2 cores, nothing else running ([log](")
    assert "): 7 min 4 s." in text
    block = text.split("```text\n", 1)[1].split("\n```", 1)[0].splitlines()
    assert block == [
        "pretrain msbreg: 100%|##########| 300/300 [04:00<00:00, loss=0.2]",
        "Pre-training finished: runs/x/final",
        "Loss and online k-NN curves: runs/x/training_curves.png",
        "Exported SmallStemResNetModel (ssl_resnet_small_stem format) to runs/x/export",
        "backbone      protocol      result",
        "pretrained    knn           top-1 33.76 %",
        "random_init   knn           top-1 15.60 %  [floor: MSBReg init at step 0]",
    ]
    assert "training_curves.png" not in text.split("```")[-1]  # no curves file: no link
    assert report_make_pretrain.wall_time("real\t0m42.5s\n") == "42 s"
    assert "not been measured yet" in report_make_pretrain.make_pretrain_section(tmp_path / "none", "x")


def test_readme_make_pretrain_numbers_are_its_eval_json():
    directory = report.RESULTS / "make_pretrain"
    if not (directory / "eval_digits.json").is_file():
        pytest.skip("make pretrain has not been measured")
    _, section, _ = report._split(report.README, report.MAKE_PRETRAIN)
    for row in json.loads((directory / "eval_digits.json").read_text())["results"]:
        line = next(
            line
            for line in section.splitlines()
            if line.startswith(row["backbone"]) and f"{row['protocol']} (" in line
        )
        assert f"top-1 {100 * row['top1']:.2f} %" in line
