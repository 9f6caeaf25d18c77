"""End-to-end examples (slow): the sustainable chain MAE -> TEC -> TEC through the command line."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, ViTModel


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sustainable_chain_mae_then_two_tec_rounds(tmp_path):
    small = ["--hidden_size", "48", "--num_hidden_layers", "3", "--intermediate_size", "96", "--batch_size", "16"]
    cmd = [sys.executable, str(ROOT / "examples" / "sustainable_chain.py"), "--workdir", str(tmp_path)]
    cmd += ["--max_steps", "3", "--", *small, "--warmup_steps", "1"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "chain.json").read_text())
    assert [r["round"] for r in summary] == ["round0-mae", "round1-tec", "round2-tec"]
    for previous, record in itertools.pairwise(summary):
        config = json.loads((Path(record["export"]).parent / "final" / "config.json").read_text())
        assert config["model_type"] == "ssl_tec"
        assert config["base_model"] == previous["export"]  # each round learnt from the previous export
    x = torch.randn(2, 3, 32, 32)
    for record in summary:
        model = AutoModel.from_pretrained(record["export"])
        assert type(model) is ViTModel
        assert torch.isfinite(model(x).last_hidden_state).all()
        assert 0 <= record["knn"] <= 1
        assert 0 <= record["linear"] <= 1
    assert "round2-tec" in done.stdout
