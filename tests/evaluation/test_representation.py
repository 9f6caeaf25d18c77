"""`representation_diagnostics` on exported backbones (ViT and ResNet)."""

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
