"""benchmarks/speed.py and report_speed.py on tiny models: the group runner, the memory probe, the README table."""

import json
import math
import sys

import pytest
import torch
from bench_scripts import load


speed = load("speed")
report_speed = load("report_speed")

TINY = {
    "backbone": "vit-tiny",
    "image_size": 16,
    "patch_size": 4,
    "batch_size": 2,
    "backbone_overrides": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
    "config_overrides": dict(
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    ),
}
CPU = torch.device("cpu")


def test_run_group_medians_and_ratios():
    group = speed.Group("tiny", (speed.Entry("MAE", "mae", TINY), speed.Entry(speed.REFERENCE, "vitmae", TINY, 1e9)))
    r = speed.run_group(group, "fp32", CPU, threads=1, warmup=1, repeats=3, round_seconds=0.0, memory=False, log=print)
    assert (r["group"], r["precision"], r["base"], r["reference"]) == ("tiny", "fp32", "MAE", speed.REFERENCE)
    mae, twin = r["models"]["MAE"], r["models"][speed.REFERENCE]
    for m in (mae, twin):
        assert len(m["step_seconds_all"]) == len(m["steps_per_round"]) == 3
        assert m["step_seconds_median"] == sorted(m["step_seconds_all"])[1]
        assert m["images_per_second"] == pytest.approx(2 / m["step_seconds_median"])
        assert m["peak_memory_mib"] is None
        low, high = m["ratio_to_base_rounds"]
        assert low <= m["ratio_to_base"] <= high
    assert mae["ratio_to_base"] == twin["ratio_to_vitmae"] == 1.0
    assert twin["ratio_to_base"] == pytest.approx(twin["step_seconds_median"] / mae["step_seconds_median"])
    assert mae["ratio_to_vitmae"] == pytest.approx(mae["step_seconds_median"] / twin["step_seconds_median"])
    (target,) = r["targets"]
    assert (target["model"], target["max"], target["value"]) == (speed.REFERENCE, 1e9, twin["ratio_to_base"])
    assert target["meets_target"] is True


@pytest.mark.parametrize("keep_freed", [False, True])  # glibc's default allocator or the training loop's setting
def test_memory_probe_in_a_fresh_process(keep_freed):
    result = speed.measure_memory(speed.Entry("MAE", "mae", TINY), "fp32", CPU, threads=1, keep_freed=keep_freed)
    assert result["peak_memory_mib"] >= 0
    assert math.isfinite(result["peak_memory_mib"])
    assert result["source"] in ("VmHWM - VmRSS", "ru_maxrss")
    # the probe process applied (or not) the loop's setting; glibc's mallopt exists only on Linux
    assert result["keep_freed_memory"] is (keep_freed and sys.platform.startswith("linux"))


def _model(median: float, ratio: float) -> dict:
    return {
        "setting": TINY,
        "step_seconds_median": median,
        "step_seconds_all": [median],
        "steps_per_round": [1],
        "images_per_second": 2 / median,
        "peak_memory_mib": 12.5,
        "ratio_to_base": ratio,
        "ratio_to_base_rounds": [ratio, ratio],
        "ratio_to_vitmae": ratio,
        "ratio_to_vitmae_rounds": [ratio, ratio],
    }


def _result(precision: str, asl_ratio: float) -> dict:
    target = {"model": "ASL (AEE)", "ratio": "ratio_to_base", "max": 1.5, "value": asl_ratio}
    return {
        "group": "mae",
        "precision": precision,
        "base": "MAE",
        "reference": speed.REFERENCE,
        "timing": {"warmup": 1, "repeats": 1, "round_seconds": 0.1},
        "models": {"MAE": _model(1.0, 1.0), "ASL (AEE)": _model(asl_ratio, asl_ratio)},
        "targets": [{**target, "meets_target": asl_ratio <= 1.5}],
    }


def test_speed_section_rows_and_targets(tmp_path):
    header = {
        "benchmark": "training step",
        "memory_metric": "peak RSS increase during 2 training steps (CPU, fresh process)",
        "machine": {"cpu": "test cpu", "device": "cpu", "threads": 1},
        "versions": {"torch": "t", "transformers": "tf"},
        "timing": {"warmup": 1, "repeats": 1, "round_seconds": 0.1},
    }
    path = tmp_path / "speed.json"
    speed.write_report(path, [_result("fp32", 2.0), _result("bf16", 1.2)], header)
    speed.write_report(path, [{**_result("fp32", 2.0), "group": "other"}], header)  # keeps the mae results
    assert [(r["group"], r["precision"]) for r in json.loads(path.read_text())["results"]] == [
        ("mae", "fp32"),
        ("mae", "bf16"),
        ("other", "fp32"),
    ]
    rows = [line for line in report_speed.speed_section(path).splitlines() if line.startswith(("| mae", "| other"))]
    assert len(rows) == 6
    asl = {row.split(" | ")[3]: row for row in rows if row.startswith("| mae | ASL (AEE)")}
    assert asl["fp32"].endswith("| ≤ 1.5 | **no** |")
    assert asl["bf16"].endswith("| ≤ 1.5 | yes |")
    assert "2.000 (2.00\N{EN DASH}2.00)" in asl["fp32"]
    assert "| 12 |" in asl["fp32"]  # peak memory, MiB


def test_speed_section_rejects_the_pairwise_schema(tmp_path):
    path = tmp_path / "speed.json"
    path.write_text(json.dumps({"config": {}, "results": [{"pair": "asl-aee-vs-mae", "models": ["MAE", "ASL"]}]}))
    with pytest.raises(ValueError, match=r"python benchmarks/speed\.py"):
        report_speed.speed_section(path)


def test_allocator_of_a_run_is_named():
    assert "--cpu_keep_freed_memory" in report_speed.allocator({"cpu_keep_freed_memory": True, "environment": {}})
    assert "glibc's default allocator" in report_speed.allocator({})  # files from before the field existed
    assert report_speed.allocator({"environment": {"GLIBC_TUNABLES": "x"}}).endswith("with `GLIBC_TUNABLES=x`")
