"""`representation_diagnostics` on exported backbones (ViT and ResNet)."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_byol_config, tiny_mae_config

from ssl_hf import BYOLForPreTraining, MAEForPreTraining
from ssl_hf.evaluation import representation_diagnostics
from ssl_hf.export import export_pretrained


@pytest.mark.parametrize("method", ["mae", "byol"])
def test_diagnostics_of_an_export(tmp_path, method):
    torch.manual_seed(0)
    model = MAEForPreTraining(tiny_mae_config()) if method == "mae" else BYOLForPreTraining(tiny_byol_config())
    model.eval().save_pretrained(tmp_path / "final")
    export = export_pretrained(tmp_path / "final", tmp_path / "export")
    report = representation_diagnostics(str(export), "digits", num_images=64)
    assert report["num_images"] == 64
    assert 0 <= report["alignment"] <= 4  # squared distance of unit vectors
    assert report["uniformity"] <= 0
    assert report["effective_rank"] >= 1
    assert report["embedding_std"] > 0
    again = representation_diagnostics(str(export), "digits", num_images=64)
    assert again == report  # the augmented pairs are seeded
    floor = representation_diagnostics(str(export), "digits", num_images=64, random_init=True)
    assert floor["backbone"] == "random-init"


@pytest.mark.parametrize("method", ["mae", "byol"])
def test_token_similarity_and_plots(tmp_path, method):
    torch.manual_seed(0)
    model = MAEForPreTraining(tiny_mae_config()) if method == "mae" else BYOLForPreTraining(tiny_byol_config())
    model.eval().save_pretrained(tmp_path / "final")
    export = export_pretrained(tmp_path / "final", tmp_path / "export")
    report = representation_diagnostics(str(export), "digits", num_images=300, plots_dir=tmp_path / "plots")
    if method == "mae":  # a ViT: mean pairwise cosine of each image's 16 patch tokens
        assert -1 / 15 <= report["token_cosine_similarity"] <= 1
    else:  # a CNN has no tokens
        assert report["token_cosine_similarity"] is None
    assert sorted(report["plots"]) == ["projection", "spectrum"]
    for path in report["plots"].values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
