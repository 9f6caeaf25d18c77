"""Every `examples/configs/*_tiny.yaml` parses and starts a run (one step at batch 4)."""

import json
from pathlib import Path

import pytest
import yaml

import ssl_hf
from ssl_hf.cli import main


CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


@pytest.mark.parametrize("name", ["asl_tiny", "msbreg_tiny", "byol_tiny"])
def test_example_config_parses_and_a_run_starts(tmp_path, name):
    path = CONFIGS / f"{name}.yaml"
    method = yaml.safe_load(path.read_text())["method"]
    out = tmp_path / name
    main(["pretrain", "--config", str(path), "--max_steps", "1", "--batch_size", "4", "--output_dir", str(out)])
    record = json.loads((out / "args.json").read_text())
    assert record["method"] == method
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "final" / "config.json").is_file()
    if method == "byol":  # a LARS peak lr of 5.0 (the example's former value) is far above any measured recipe
        assert record["derived"]["peak_learning_rate"] <= 0.5


def test_the_byol_example_is_the_measured_byol_cpu_recipe():
    """byol_tiny.yaml trains with the settings measured in benchmarks/results/sweeps/byol_cpu (the byol-cpu preset)."""
    example = yaml.safe_load((CONFIGS / "byol_tiny.yaml").read_text())
    flat = {**example["model"], **example["data"], **example["training"]}
    preset = ssl_hf.get_method("byol").presets["byol-cpu"]
    peak = preset["base_learning_rate"] * preset["batch_size"] / 256
    assert flat["learning_rate"] == pytest.approx(peak)
    for key in ("lars_trust_coefficient", "weight_decay", "channel_permute_prob", "hidden_sizes", "batch_size"):
        assert flat[key] == preset[key], key


def test_the_msbreg_example_is_the_msbreg_cpu_recipe():
    """msbreg_tiny.yaml trains the network and schedule of `msbreg-cpu`."""
    example = yaml.safe_load((CONFIGS / "msbreg_tiny.yaml").read_text())
    flat = {**example["model"], **example["data"], **example["training"]}
    preset = ssl_hf.get_method("msbreg").presets["msbreg-cpu"]
    keys = ("hidden_sizes", "depths", "downsample_in_first_stage", "proj_num_layers", "num_views", "batch_size")
    for key in (*keys, "base_learning_rate", "max_steps", "lars_trust_coefficient", "channel_permute_prob"):
        assert flat[key] == preset[key], key
