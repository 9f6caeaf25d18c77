"""TEC's `--base_model` takes an official MAE / iBOT / DINO `.pth` file (converted in memory by `ssl_hf.convert`)."""

import json

import numpy as np
import pytest
import torch
from official_checkpoints import dino_full_checkpoint, timm_vit_forward, timm_vit_state_dict

from ssl_hf.cli import main
from ssl_hf.models.tec.base_model import load_base_encoder, read_base_config


@pytest.mark.parametrize("container", ["model", "state_dict", "dino_full"])
def test_an_official_file_is_a_base_model(container, tmp_path):
    sd = timm_vit_state_dict()
    checkpoint = dino_full_checkpoint(sd) if container == "dino_full" else {container: sd}
    torch.save(checkpoint, tmp_path / "base.pth")
    config = read_base_config(str(tmp_path / "base.pth"))
    assert (config.model_type, config.hidden_size, config.num_attention_heads, config.patch_size) == ("vit", 192, 3, 4)
    encoder = load_base_encoder(tmp_path / "base.pth")
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = encoder(pixel_values=x).last_hidden_state
    assert (got - timm_vit_forward(sd, x, num_heads=3)).abs().max().item() < 1e-5


def test_a_file_without_a_vit_is_explained(tmp_path):
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="TEC's base model"):
        read_base_config(str(tmp_path / "resnet.pth"))


def test_tec_pretrains_from_an_official_mae_file(tmp_path):
    """`ssl-hf pretrain --method tec --base_model mae_pretrain_vit_tiny4.pth`: 2 steps on a fixture-sized file."""
    base = tmp_path / "mae_pretrain_vit_tiny4.pth"
    torch.save({"model": timm_vit_state_dict()}, base)  # width 192 (3 heads), depth 2, patch 4, 32 px
    # a tiny student cut into the base model's patches (TEC predicts per-patch targets): 32 px, patch 4
    student = {"image_size": 32, "patch_size": 4, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    decoder = {"decoder_hidden_size": 16, "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2}
    fields = {**student, "intermediate_size": 37, **decoder, "decoder_intermediate_size": 24, "attention_topk": 3}
    fields["adapter_group_size"] = 1
    flags = [text for name, value in fields.items() for text in (f"--{name}", str(value))]
    run = tmp_path / "run"
    argv = ["pretrain", "--method", "tec", "--backbone", "vit-tiny", *flags, "--base_model", str(base)]
    main([*argv, "--dataset", "digit-scenes", "--batch_size", "8", "--max_steps", "2", "--output_dir", str(run)])
    record = json.loads((run / "args.json").read_text())
    assert record["model_config"]["base_model"] == str(base)
    assert (record["model_config"]["base_hidden_size"], record["model_config"]["base_num_attention_heads"]) == (192, 3)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    assert {"loss_feature", "loss_attention"} <= set(steps[0])
    assert all(np.isfinite(s["loss"]) for s in steps)
    assert (run / "final" / "config.json").is_file()
