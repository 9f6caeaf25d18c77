"""`ssl-hf convert` for ViT sources: every container of MAE / DINO / iBOT, TEC, SelfPatch and timm ViTs.

Each converted model is compared with `official_checkpoints.timm_vit_forward`, an independent re-implementation of the
official timm-style forward, on the same state dict.
"""

import json

import pytest
import torch
from huggingface_hub import ModelCard
from official_checkpoints import (
    dino_full_checkpoint,
    dino_head_keys,
    mae_decoder_keys,
    timm_vit_forward,
    timm_vit_state_dict,
)
from transformers import AutoModel, SiglipVisionModel, ViTModel

from ssl_hf.cards import update_card
from ssl_hf.convert import (
    ConversionError,
    convert_checkpoint,
    load_official_state_dict,
    timm_vit_to_hf,
)


ATOL = 1e-5


@pytest.fixture(scope="module")
def backbone():
    """ViT-Tiny-like (width 192, 3 heads) with depth 2, patch 4, 32x32 images: 64 patches + cls."""
    return timm_vit_state_dict()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def _containers(backbone):
    return {
        "model": {"model": {**backbone, **mae_decoder_keys()}, "epoch": 799},  # MAE *_full.pth style
        "raw": dict(backbone),  # DINO backbone / TEC release
        "state_dict": {"state_dict": dict(backbone)},  # iBOT checkpoint_teacher.pth
        "dino_full": dino_full_checkpoint(backbone),  # DINO *_full_checkpoint.pth
    }


def _features(out, pixels, **kwargs):
    model = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        return model, model(pixel_values=pixels, **kwargs)


@pytest.mark.parametrize("container", ["model", "raw", "state_dict", "dino_full"])
@pytest.mark.parametrize("source_format", ["mae", "dino", "ibot"])
def test_every_container_converts_to_the_official_forward(source_format, container, backbone, pixels, tmp_path):
    path = tmp_path / f"{container}.pth"
    torch.save(_containers(backbone)[container], path)
    out = convert_checkpoint(path, tmp_path / "export", source_format)
    model, output = _features(out, pixels)
    assert isinstance(model, ViTModel)
    expected = timm_vit_forward(backbone, pixels, num_heads=3)
    assert (output.last_hidden_state - expected).abs().max().item() < ATOL
    # the fixed identity pooler of `ssl-hf export`
    torch.testing.assert_close(output.pooler_output, torch.tanh(expected[:, 0]), atol=ATOL, rtol=0)
    config = json.loads((out / "config.json").read_text())
    assert (config["layer_norm_eps"], config["hidden_act"], config["num_attention_heads"]) == (1e-6, "gelu", 3)
    assert (config["image_size"], config["patch_size"], config["num_hidden_layers"]) == (32, 4, 2)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32}
    assert processor["image_mean"] == [0.485, 0.456, 0.406]
    record = json.loads((out / "conversion.json").read_text())
    assert record["source_file"] == path.name
    assert record["encoder_prefix"] == ("backbone." if container == "dino_full" else "")
    card = ModelCard.load(out / "README.md")
    assert path.name in card.text
    assert "converted" in card.text
    assert "{{" not in card.text
    assert "converted-checkpoint" in card.data.tags
    assert not list(tmp_path.glob(".export*"))  # the temporary folder was renamed


def test_the_card_names_the_paper_and_the_dropped_parts(backbone, tmp_path):
    torch.save(_containers(backbone)["model"], tmp_path / "mae_pretrain_vit_tiny_full.pth")
    out = convert_checkpoint(tmp_path / "mae_pretrain_vit_tiny_full.pth", tmp_path / "mae", "mae")
    card = ModelCard.load(out / "README.md")
    assert "Masked Autoencoders Are Scalable Vision Learners" in card.text
    assert "`decoder_blocks`" in card.text  # dropped, and said so
    assert card.data.license == "cc-by-nc-4.0"
    record = json.loads((out / "conversion.json").read_text())
    assert record["dropped"]["decoder_pred"] == 1
    assert "mask_token" in record["dropped"]


def test_dino_full_checkpoint_gives_the_teacher(backbone, pixels, tmp_path):
    torch.save(_containers(backbone)["dino_full"], tmp_path / "full.pth")
    state = load_official_state_dict(tmp_path / "full.pth")
    assert set(state) == {f"backbone.{k}" for k in backbone} | {f"head.{k}" for k in dino_head_keys()}
    student = load_official_state_dict(tmp_path / "full.pth", key="student")
    assert "backbone.cls_token" in student  # `module.` removed at the start only
    torch.testing.assert_close(student["backbone.cls_token"], backbone["cls_token"] + 0.5)


def test_timm_vit_to_hf_gives_exactly_the_vit_model_weights():
    state = {f"backbone.{k}": v for k, v in timm_vit_state_dict(width=384, depth=1, qkv_bias=False).items()}
    state["backbone.head.weight"] = torch.zeros(10, 384)  # a classifier: ignored
    state["other.weight"] = torch.zeros(3)  # outside the prefix: ignored
    weights, config = timm_vit_to_hf(state, prefix="backbone.")
    assert (config.num_attention_heads, config.qkv_bias, config.layer_norm_eps) == (6, False, 1e-6)
    assert set(weights) == set(ViTModel(config, add_pooling_layer=False).state_dict())
    torch.testing.assert_close(
        weights["layers.0.attention.k_proj.weight"], state["backbone.blocks.0.attn.qkv.weight"][384:768]
    )


def test_tec_release_without_final_norm(pixels, tmp_path):
    """TEC's released files: cls token folded, no `norm`; the export's norm has weight 1 and bias 0."""
    sd = timm_vit_state_dict(final_norm=False, seed=3)
    torch.save(sd, tmp_path / "tec_mae_vitt_300ep.pth")
    out = convert_checkpoint(tmp_path / "tec_mae_vitt_300ep.pth", tmp_path / "tec", "tec")
    _, output = _features(out, pixels, output_hidden_states=True)
    raw = timm_vit_forward(sd, pixels, num_heads=3, apply_norm=False)
    assert (output.hidden_states[-1] - raw).abs().max().item() < ATOL
    standardised = torch.nn.functional.layer_norm(raw, (192,), eps=1e-6)
    assert (output.last_hidden_state - standardised).abs().max().item() < ATOL
    text = (out / "README.md").read_text()
    assert "no final LayerNorm" in text
    assert "weight 1 and bias 0" in text


def test_tec_pretraining_checkpoint_folds_the_input_adapter(pixels, tmp_path):
    sd = timm_vit_state_dict(seed=4)
    gen = torch.Generator().manual_seed(5)
    sd["cls_token_mlp.fc1.weight"] = 0.05 * torch.randn(768, 192, generator=gen)
    sd["cls_token_mlp.fc1.bias"] = 0.05 * torch.randn(768, generator=gen)
    sd["cls_token_mlp.fc2.weight"] = 0.05 * torch.randn(192, 768, generator=gen)
    sd["cls_token_mlp.fc2.bias"] = 0.05 * torch.randn(192, generator=gen)
    pretraining = {
        **sd,
        "encoder_adaptor.fuse_fcs.0.weight": torch.zeros(192, 384),
        "decoder_pos_embed": torch.zeros(1),
    }
    torch.save({"model": pretraining, "epoch": 1}, tmp_path / "checkpoint-1.pth")
    out = convert_checkpoint(tmp_path / "checkpoint-1.pth", tmp_path / "tec", "tec")
    _, output = _features(out, pixels)
    expected = timm_vit_forward(sd, pixels, num_heads=3)
    assert (output.last_hidden_state - expected).abs().max().item() < ATOL
    assert "input adapter" in (out / "README.md").read_text()


def _selfpatch_teacher():
    gen = torch.Generator().manual_seed(6)
    ca_head = {
        "ca_head.cls_token": torch.randn(1, 1, 192, generator=gen),
        "ca_head.cls_blocks.0.attn.q.weight": torch.randn(192, 192, generator=gen),
        "ca_head.norm.weight": 1 + 0.1 * torch.randn(192, generator=gen),
        "ca_head.norm.bias": 0.1 * torch.randn(192, generator=gen),
    }
    heads = {f"{name}.{k}": v for name in ("c_head", "p_head") for k, v in dino_head_keys().items()}
    return ca_head, heads


def test_selfpatch_full_checkpoint_takes_the_aggregation_norm(pixels, tmp_path):
    backbone = timm_vit_state_dict(cls=False, final_norm=False, seed=8)
    ca_head, heads = _selfpatch_teacher()
    checkpoint = dino_full_checkpoint(backbone, extra_teacher={**ca_head, **heads})
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    out = convert_checkpoint(tmp_path / "checkpoint.pth", tmp_path / "selfpatch", "selfpatch")
    model, output = _features(out, pixels)
    assert isinstance(model, SiglipVisionModel)
    norm = (ca_head["ca_head.norm.weight"], ca_head["ca_head.norm.bias"])
    expected = timm_vit_forward(backbone, pixels, num_heads=3, final_norm=norm)
    assert expected.shape == (2, 64, 192)
    assert (output.last_hidden_state - expected).abs().max().item() < ATOL
    assert output.pooler_output is None
    assert json.loads((out / "config.json").read_text())["model_type"] == "siglip_vision_model"
    assert "ca_head.norm" in (out / "README.md").read_text()


def test_selfpatch_backbone_file_without_norm(pixels, tmp_path):
    backbone = timm_vit_state_dict(cls=False, final_norm=False, seed=9)
    torch.save(backbone, tmp_path / "selfpatch_backbone.pth")
    out = convert_checkpoint(tmp_path / "selfpatch_backbone.pth", tmp_path / "out", "selfpatch")
    _, output = _features(out, pixels)
    raw = timm_vit_forward(backbone, pixels, num_heads=3, apply_norm=False)
    standardised = torch.nn.functional.layer_norm(raw, (192,), eps=1e-6)
    assert (output.last_hidden_state - standardised).abs().max().item() < ATOL


def test_position_table_without_cls_row(pixels, tmp_path):
    sd = timm_vit_state_dict(cls_row=False, seed=10)
    torch.save(sd, tmp_path / "vit.pth")
    out = convert_checkpoint(tmp_path / "vit.pth", tmp_path / "out", "timm-vit")
    _, output = _features(out, pixels)
    assert (output.last_hidden_state - timm_vit_forward(sd, pixels, num_heads=3)).abs().max().item() < ATOL


def test_non_standard_width_needs_the_heads(pixels, tmp_path):
    sd = timm_vit_state_dict(width=64, seed=11)
    torch.save(sd, tmp_path / "vit.pth")
    with pytest.raises(ConversionError, match="--num_attention_heads"):
        convert_checkpoint(tmp_path / "vit.pth", tmp_path / "out", "timm-vit")
    assert not (tmp_path / "out").exists()
    out = convert_checkpoint(tmp_path / "vit.pth", tmp_path / "out", "timm-vit", num_attention_heads=4)
    _, output = _features(out, pixels)
    assert (output.last_hidden_state - timm_vit_forward(sd, pixels, num_heads=4)).abs().max().item() < ATOL


def test_another_image_size_resizes_the_position_table(backbone, tmp_path):
    torch.save(backbone, tmp_path / "vit.pth")
    native = AutoModel.from_pretrained(convert_checkpoint(tmp_path / "vit.pth", tmp_path / "a", "dino")).eval()
    out = convert_checkpoint(tmp_path / "vit.pth", tmp_path / "b", "dino", image_size=48)
    resized = AutoModel.from_pretrained(out).eval()
    assert resized.config.image_size == 48
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 48, "width": 48}
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        interpolated = native(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        got = resized(pixel_values=x).last_hidden_state
    assert (got - interpolated).abs().max().item() < ATOL


def test_evaluation_results_keep_the_source_in_the_card(backbone, tmp_path):
    torch.save(backbone, tmp_path / "dino_vit_tiny4_pretrain.pth")
    out = convert_checkpoint(tmp_path / "dino_vit_tiny4_pretrain.pth", tmp_path / "dino", "dino")
    row = {"protocol": "knn", "dataset": "digits", "settings": "k=20", "top1": 0.5, "top5": 0.9}
    update_card(out, {"results": [{**row, "backbone": "pretrained"}]})
    card = ModelCard.load(out / "README.md")
    assert "Converted from: `dino_vit_tiny4_pretrain.pth`" in card.text
    assert "| pretrained | knn (k=20) | digits | 50.00 % | 90.00 % |" in card.text
    assert card.data.license == "apache-2.0"
