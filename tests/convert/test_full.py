"""`ssl-hf convert --full`: MAE `*_full.pth` and DINO full checkpoints -> ssl_hf pre-training models, checked against
independent re-implementations of the official forwards (`official_checkpoints.py`)."""

import argparse
import json

import pytest
import torch
from official_checkpoints import (
    BYOL_NAMES,
    byol_head_forward,
    byol_state_dict,
    dino_full_checkpoint,
    dino_head_forward,
    dino_head_keys,
    mae_full_state_dict,
    mae_reference_loss,
    selfpatch_full_checkpoint,
    selfpatch_image_token,
    timm_vit_forward,
    timm_vit_state_dict,
    torchvision_resnet_forward,
    torchvision_resnet_state_dict,
)

from ssl_hf.cli import main
from ssl_hf.convert import ConversionError
from ssl_hf.convert.full import convert_full_checkpoint
from ssl_hf.models.byol import BYOLForPreTraining
from ssl_hf.models.dino import DINOForPreTraining
from ssl_hf.models.mae import MAEForPreTraining
from ssl_hf.models.selfpatch import SelfPatchForPreTraining


def _nothing_left(tmp_path):
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


@pytest.fixture(scope="module")
def mae_full(tmp_path_factory):
    path = tmp_path_factory.mktemp("mae") / "mae_visualize_vit_tiny4_full.pth"
    sd = mae_full_state_dict()
    torch.save({"model": sd}, path)
    return path, sd


def test_mae_full_reproduces_the_official_loss_and_prediction(mae_full, tmp_path):
    path, sd = mae_full
    out = convert_full_checkpoint(path, tmp_path / "out", "mae", decoder_num_attention_heads=4)
    model = MAEForPreTraining.from_pretrained(out).eval()
    assert model.config.norm_pix_loss
    assert model.config.decoder_hidden_size == 64
    assert model.config.decoder_num_hidden_layers == 2
    assert model.config.decoder_num_attention_heads == 4
    gen = torch.Generator().manual_seed(0)
    imgs, noise = torch.randn(2, 3, 32, 32, generator=gen), torch.rand(2, 64, generator=gen)
    with torch.no_grad():
        ours = model(imgs, noise=noise)
        loss, pred, mask = mae_reference_loss(sd, imgs, noise, 0.75, heads=3, dec_heads=4)
    assert torch.equal(ours.mask.float(), mask)
    torch.testing.assert_close(ours.logits, pred, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.loss, loss, atol=1e-5, rtol=0)
    record = json.loads((out / "conversion.json").read_text())
    assert record["mode"] == "full"
    assert record["model_class"] == "MAEForPreTraining"
    assert record["method"] == "mae"
    assert record["inferred_from_shapes"]["decoder_hidden_size"] == 64


def test_mae_full_needs_the_decoder_heads_of_a_non_standard_width(mae_full, tmp_path):
    with pytest.raises(ConversionError, match="--decoder_num_attention_heads"):
        convert_full_checkpoint(mae_full[0], tmp_path / "out", "mae")
    _nothing_left(tmp_path)


def test_an_encoder_only_mae_file_is_refused(tmp_path, capsys):
    torch.save({"model": timm_vit_state_dict()}, tmp_path / "enc.pth")
    with pytest.raises(SystemExit):
        main(["convert", "--from", "mae", str(tmp_path / "enc.pth"), "--full", "--output_dir", str(tmp_path / "out")])
    assert "drop --full" in capsys.readouterr().err
    _nothing_left(tmp_path)


def _dino_checkpoint(norm_last_layer: bool) -> dict:
    checkpoint = dino_full_checkpoint(timm_vit_state_dict())
    # a student of ordinary scale (the fixture's student is the teacher + 0.5, too far off for a 1e-5 fp32 check)
    checkpoint["student"].update({f"module.backbone.{k}": v for k, v in timm_vit_state_dict(seed=6).items()})
    student_head = dino_head_keys(seed=7)
    if not norm_last_layer:
        student_head["last_layer.weight_g"] = 0.5 + torch.rand(32, 1, generator=torch.Generator().manual_seed(3))
    checkpoint["student"].update({f"module.head.{k}": v for k, v in student_head.items()})
    checkpoint["dino_loss"]["center"] = torch.randn(1, 32, generator=torch.Generator().manual_seed(4))
    checkpoint["args"] = argparse.Namespace(
        arch="vit_tiny", norm_last_layer=norm_last_layer, momentum_teacher=0.99, teacher_temp=0.07, epochs=10
    )
    return checkpoint


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_dino_full_reproduces_student_and_teacher_logits(norm_last_layer, tmp_path):
    checkpoint = _dino_checkpoint(norm_last_layer)
    torch.save(checkpoint, tmp_path / "dino_tiny4_full_checkpoint.pth")
    out = convert_full_checkpoint(tmp_path / "dino_tiny4_full_checkpoint.pth", tmp_path / "out", "dino")
    model = DINOForPreTraining.from_pretrained(out).eval()
    c = model.config
    assert (c.out_dim, c.head_hidden_dim, c.head_bottleneck_dim, c.head_num_layers) == (32, 64, 16, 3)
    assert c.norm_last_layer is norm_last_layer
    assert c.ema_base == 0.99
    assert c.teacher_temp == 0.07
    assert model.head.last_layer.gain.requires_grad is not norm_last_layer
    torch.testing.assert_close(model.center, checkpoint["dino_loss"]["center"][0])
    assert float(model.progress) == 0
    crops = torch.randn(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = model(crops)
        flat = crops.transpose(0, 1).reshape(4, 3, 32, 32)  # view-major, as the model's (V, B, K)
        student = {k.removeprefix("module."): v for k, v in checkpoint["student"].items()}
        for sd, logits in ((student, ours.student_logits), (checkpoint["teacher"], ours.teacher_logits)):
            cls = timm_vit_forward(sd, flat, num_heads=3, prefix="backbone.")[:, 0]
            reference = dino_head_forward(sd, "head.", cls).reshape(2, 2, -1)
            torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)
    record = json.loads((out / "conversion.json").read_text())
    assert record["from_checkpoint_args"]["ema_base"] == "args.momentum_teacher = 0.99"


def test_a_dino_backbone_file_is_refused_with_full(tmp_path):
    torch.save(timm_vit_state_dict(), tmp_path / "dino_deitsmall16_pretrain.pth")
    with pytest.raises(ConversionError, match="not a full DINO checkpoint"):
        convert_full_checkpoint(tmp_path / "dino_deitsmall16_pretrain.pth", tmp_path / "out", "dino")
    _nothing_left(tmp_path)


def test_unknown_tensors_stop_a_full_conversion(tmp_path):
    checkpoint = _dino_checkpoint(True)
    checkpoint["teacher"]["head.extra.weight"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "x.pth")
    with pytest.raises(ConversionError, match=r"head\.extra\.weight"):
        convert_full_checkpoint(tmp_path / "x.pth", tmp_path / "out", "dino")
    _nothing_left(tmp_path)


def test_full_is_refused_for_formats_not_built_yet(tmp_path, capsys):
    torch.save(_dino_checkpoint(True), tmp_path / "x.pth")
    with pytest.raises(SystemExit):
        main(["convert", "--from", "ibot", str(tmp_path / "x.pth"), "--full", "--output_dir", str(tmp_path / "out")])
    assert "--full supports --from mae, dino, selfpatch, solo-learn, lightly" in capsys.readouterr().err
    _nothing_left(tmp_path)


def test_dino_full_with_a_resnet(tmp_path):
    """DINO's ResNet-50 recipe: torchvision backbone (BatchNorm statistics included) under `backbone.`."""
    backbone = torchvision_resnet_state_dict(bottleneck=True, classifier=False)
    head = dino_head_keys(width=128)
    checkpoint = {
        "student": {f"module.{k}": v for k, v in _network(backbone, head).items()},
        "teacher": _network(backbone, head),
        "dino_loss": {"center": torch.randn(1, 32)},
    }
    torch.save(checkpoint, tmp_path / "dino_resnet50_full_checkpoint.pth")
    out = convert_full_checkpoint(tmp_path / "dino_resnet50_full_checkpoint.pth", tmp_path / "out", "dino")
    model = DINOForPreTraining.from_pretrained(out).eval()
    assert model.config.backbone_config.model_type == "resnet"
    crops = torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = model(crops).teacher_logits
        features = torchvision_resnet_forward(checkpoint["teacher"], crops.transpose(0, 1).flatten(0, 1), "backbone.")
    reference = dino_head_forward(checkpoint["teacher"], "head.", features).reshape(2, 2, -1)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def _network(backbone: dict, head: dict) -> dict:
    return {**{f"backbone.{k}": v for k, v in backbone.items()}, **{f"head.{k}": v for k, v in head.items()}}


def test_selfpatch_full_reproduces_the_image_logits(tmp_path):
    checkpoint = selfpatch_full_checkpoint()
    torch.save(checkpoint, tmp_path / "selfpatch_checkpoint.pth")
    out = convert_full_checkpoint(tmp_path / "selfpatch_checkpoint.pth", tmp_path / "out", "selfpatch")
    model = SelfPatchForPreTraining.from_pretrained(out).eval()
    c = model.config
    assert (c.out_dim, c.patch_out_dim, c.num_neighbors_k, c.num_aggregation_blocks) == (32, 24, 2, 2)
    torch.testing.assert_close(model.patch_center, checkpoint["dino_loss"]["patch_center"][0], atol=0, rtol=0)
    torch.testing.assert_close(model.center, checkpoint["dino_loss"]["center"].flatten(), atol=0, rtol=0)
    crops = torch.randn(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = model(crops)
        flat = crops.transpose(0, 1).flatten(0, 1)
        student = {k.removeprefix("module."): v for k, v in checkpoint["student"].items()}
        for sd, logits in ((student, ours.student_logits), (checkpoint["teacher"], ours.teacher_logits)):
            tokens = timm_vit_forward(sd, flat, num_heads=3, prefix="backbone.", apply_norm=False)
            reference = dino_head_forward(sd, "c_head.", selfpatch_image_token(sd, tokens, 3)).reshape(2, 2, -1)
            torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)
    teacher_patch = model.teacher_patch_head.last_layer.weight
    torch.testing.assert_close(teacher_patch, checkpoint["teacher"]["p_head.last_layer.weight_v"], atol=0, rtol=0)


@pytest.mark.parametrize("source_format", ["solo-learn", "lightly"])
def test_byol_full_reproduces_online_and_target_outputs(source_format, tmp_path):
    online, target, projector, target_projector, predictor, _ = BYOL_NAMES[source_format]
    sd = byol_state_dict(source_format)
    torch.save({"state_dict": sd}, tmp_path / "byol.ckpt")
    out = convert_full_checkpoint(tmp_path / "byol.ckpt", tmp_path / "out", source_format)
    model = BYOLForPreTraining.from_pretrained(out).eval()
    c = model.config
    assert (c.proj_hidden_dim, c.proj_out_dim, c.pred_hidden_dim, c.head_norm) == (24, 8, 24, "bn")
    # float64: the outputs reach ~10 through the random ResNet + heads, where fp32 rounding alone is ~2e-5
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    views = torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        _, predictions, targets = model.double().embed_views(views)
        flat = views.transpose(0, 1).flatten(0, 1)
        z = byol_head_forward(sd, projector, torchvision_resnet_forward(sd, flat, online))
        target_z = byol_head_forward(sd, target_projector, torchvision_resnet_forward(sd, flat, target))
    torch.testing.assert_close(predictions.flatten(0, 1), byol_head_forward(sd, predictor, z), atol=1e-10, rtol=0)
    torch.testing.assert_close(targets.flatten(0, 1), target_z, atol=1e-10, rtol=0)


def test_byol_without_a_target_network_starts_it_from_the_online_one(tmp_path):
    sd = {k: v for k, v in byol_state_dict().items() if not k.startswith("momentum_")}
    torch.save({"state_dict": sd}, tmp_path / "byol.ckpt")
    out = convert_full_checkpoint(tmp_path / "byol.ckpt", tmp_path / "out", "solo-learn")
    model = BYOLForPreTraining.from_pretrained(out)
    for online, target in zip(model.backbone.state_dict().values(), model.target_backbone.state_dict().values()):
        torch.testing.assert_close(online, target, atol=0, rtol=0)
    assert "copy of the online network" in " ".join(json.loads((out / "conversion.json").read_text())["notes"])


def test_dino_heads_with_batchnorm_keep_their_shifted_indices(tmp_path):
    """`use_bn_in_head`: Linear, BN, GELU at 0-2 and 3-5, the last Linear at 6, as in `DINOHead` (statistics kept)."""
    gen = torch.Generator().manual_seed(9)
    head = {"mlp.0.weight": torch.randn(64, 192, generator=gen), "mlp.3.weight": torch.randn(64, 64, generator=gen)}
    head.update({f"mlp.{i}.bias": torch.randn(64, generator=gen) for i in (0, 3)})
    for i in (1, 4):  # BatchNorm1d
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            head[f"mlp.{i}.{leaf}"] = torch.rand(64, generator=gen) + 0.5
        head[f"mlp.{i}.num_batches_tracked"] = torch.tensor(7)
    head["mlp.6.weight"], head["mlp.6.bias"] = torch.randn(16, 64, generator=gen), torch.randn(16, generator=gen)
    head["last_layer.weight_g"], head["last_layer.weight_v"] = torch.ones(32, 1), torch.randn(32, 16, generator=gen)
    backbone = {f"backbone.{k}": v for k, v in timm_vit_state_dict().items()}
    network = {**backbone, **{f"head.{k}": v for k, v in head.items()}}
    torch.save(
        {"student": network, "teacher": network, "dino_loss": {"center": torch.zeros(1, 32)}}, tmp_path / "x.pth"
    )
    model = DINOForPreTraining.from_pretrained(convert_full_checkpoint(tmp_path / "x.pth", tmp_path / "out", "dino"))
    assert model.config.use_bn_in_head
    assert model.config.head_num_layers == 3
    torch.testing.assert_close(model.teacher_head.mlp[4].running_var, head["mlp.4.running_var"], atol=0, rtol=0)
    torch.testing.assert_close(model.head.mlp[6].weight, head["mlp.6.weight"], atol=0, rtol=0)


def test_mae_training_checkpoint_args_set_the_config(tmp_path):
    args = argparse.Namespace(model="mae_vit_tiny", norm_pix_loss=False, mask_ratio=0.5)
    torch.save({"model": mae_full_state_dict(), "epoch": 3, "args": args}, tmp_path / "checkpoint-3.pth")
    out = convert_full_checkpoint(
        tmp_path / "checkpoint-3.pth", tmp_path / "out", "mae", decoder_num_attention_heads=4
    )
    config = MAEForPreTraining.from_pretrained(out).config
    assert not config.norm_pix_loss
    assert config.mask_ratio == 0.5
    assert (
        json.loads((out / "conversion.json").read_text())["from_checkpoint_args"]["mask_ratio"]
        == "args.mask_ratio = 0.5"
    )


def test_lightly_example_layout_converts_like_the_benchmark_layout(tmp_path):
    """lightly's `examples/pytorch_lightning/byol.py`: `nn.Sequential` ResNet indices and `*_momentum` targets."""
    sd = byol_state_dict("lightly")
    children = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    renamed = {}
    for key, value in sd.items():
        for theirs, ours in (("teacher_backbone.", "backbone_momentum."), ("backbone.", "backbone.")):
            if key.startswith(theirs):
                child, _, rest = key[len(theirs) :].partition(".")
                key = f"{ours}{children[child]}.{rest}"
                break
        renamed[key.replace("teacher_projection_head.", "projection_head_momentum.")] = value
    torch.save(sd, tmp_path / "benchmark.pth")
    torch.save(renamed, tmp_path / "example.pth")
    reference = BYOLForPreTraining.from_pretrained(
        convert_full_checkpoint(tmp_path / "benchmark.pth", tmp_path / "a", "lightly")
    )
    example = BYOLForPreTraining.from_pretrained(
        convert_full_checkpoint(tmp_path / "example.pth", tmp_path / "b", "lightly")
    )
    expected = reference.state_dict()
    for name, tensor in example.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=0, rtol=0)
