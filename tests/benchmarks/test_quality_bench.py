"""benchmarks/quality.py and report_quality.py: summaries, floor and claim verdicts, raw-pixel patches, the README table."""

import json

import pytest
import torch
from bench_scripts import load


quality = load("quality")
report_quality = load("report_quality")


def _rows(run: str, knn: list[float], budget: str = "time") -> list[dict]:
    return [{"budget": budget, "run": run, "seed": s, "protocol": "knn", "top1": v} for s, v in enumerate(knn)]


def test_pixel_patches_are_vit_tokens_in_row_major_order():
    x = torch.randn(2, 3, 8, 12)
    tokens = quality.pixel_patches(x, 4)
    assert tokens.shape == (2, 6, 48)
    for i in range(6):
        r, c = divmod(i, 3)
        torch.testing.assert_close(tokens[:, i], x[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].flatten(1))


def test_summarise_means_and_population_std_per_budget_run_protocol():
    rows = [
        *_rows("mae", [0.2, 0.4]),
        {"budget": "time", "run": "mae", "seed": 0, "protocol": "dense", "mean_iou": 30},
    ]
    summary = quality.summarise(rows)
    assert summary["time"]["mae"]["knn"] == pytest.approx({"mean": 0.3, "std": 0.1, "n": 2})
    assert summary["time"]["mae"]["dense"]["mean"] == pytest.approx(0.3)  # mIoU percent -> fraction


def test_verdicts_need_a_margin_above_the_seed_std_and_two_seeds():
    floor = quality.floor_name(quality.METHODS["asl"])
    rows = _rows("mae", [0.20, 0.22]) + _rows("asl", [0.30, 0.40]) + _rows(floor, [0.12, 0.13])
    rows += _rows("tec", [0.5])  # one seed against a two-seed floor
    floors, claims = quality.verdicts(quality.summarise(rows))
    by_method = {f["method"]: f for f in floors}
    assert by_method["mae"]["beats_floor"]
    assert by_method["asl"]["beats_floor"]
    assert by_method["mae"]["margin"] == pytest.approx(0.085)
    assert by_method["mae"]["seed_std"] == pytest.approx(0.01)
    assert not by_method["tec"]["beats_floor"]  # one seed: no spread, no verdict
    asl = next(c for c in claims if c["method"] == "asl" and c["protocol"] == "knn")
    assert asl["difference"] == pytest.approx(0.14)
    assert asl["seed_std"] == pytest.approx(0.05)
    assert asl["outcome"] == "reproduced"
    tec = next(c for c in claims if c["method"] == "tec")
    assert tec["outcome"].startswith("not reproduced (1 seed")
    noisy = quality.verdicts(quality.summarise(_rows("mae", [0.1, 0.5]) + _rows(floor, [0.2, 0.21])))[0]
    assert not noisy[0]["beats_floor"]  # margin 0.095 < seed std 0.2


def test_report_renders_every_run_floor_and_claim(tmp_path):
    floor = quality.floor_name(quality.METHODS["asl"])
    rows = _rows("mae", [0.2, 0.22]) + _rows("asl", [0.1, 0.11]) + _rows(floor, [0.12, 0.13])
    rows += _rows("mae", [0.25], budget="images")
    summary = quality.summarise(rows)
    floors, claims = quality.verdicts(summary)
    runs = [
        {"budget": b, "method": m, "seed": s, "steps": 10, "images_seen": 640}
        for b, m, s in (("time", "mae", 0), ("time", "mae", 1), ("time", "asl", 0), ("images", "mae", 0))
    ]
    report = {
        "benchmark": "test",
        "budget_minutes": 1.5,
        "seeds": [0, 1],
        "images_seeds": [0],
        "images_matched": 640,
        "calibration_images_per_second": {"mae": 200.0, "asl": 120.0},
        "methods": {
            n: {"config": "examples/configs/mae_tiny.yaml", "args": [], "pool": "mean"} for n in ("mae", "asl")
        },
        "runs": runs,
        "summary": summary,
        "floors": floors,
        "claims": claims,
        "threads": 2,
    }
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(report))
    text = report_quality.quality_section(path)
    assert "| mae | mean | 10 | 640 | 21.00 ± 1.00 | \N{EN DASH} | \N{EN DASH} | 2 |" in text
    assert f"| {floor} | mean |" in text
    assert f"| asl | {floor} | -2.00 | 0.50 | **no** |" in text
    assert "| ASL > MAE (Tab. 1, 7) | knn | -10.50 | 1.00 | not reproduced |" in text
    assert "Same number of images seen (640" in text
    path.write_text(json.dumps({"summary_top1": {}}))
    with pytest.raises(SystemExit, match="old format"):
        report_quality.quality_section(path)


def test_committed_readmes_match_the_results():
    """The acceptance of the benchmarks: README numbers are the JSON files' numbers, rendered by report.py."""
    report = load("report")
    for path, text in report.rendered().items():
        assert path.read_text() == text, f"{path} is stale: run python benchmarks/report.py"
