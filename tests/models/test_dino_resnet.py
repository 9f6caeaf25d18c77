"""DINO on a ResNet (the paper's ResNet-50, solo-learn's CIFAR ResNet-18): multi-crop through a CNN, the EMA teacher
and its BatchNorm statistics, save/load, the exported teacher and its evaluation feature, config errors, and
SelfPatch on a ResNet (off-paper). A run with the online k-NN: tests/training/test_monitor.py; the floor:
tests/evaluation/."""

import copy
import json

import pytest
import torch
from conftest import (
    perturb_student,
    tiny_dino_config,
    tiny_dino_resnet_config,
    tiny_resnet_config,
    tiny_selfpatch_config,
)
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoModel, AutoModelForPreTraining, ResNetModel, SiglipVisionConfig

from ssl_hf import DINOConfig, DINOForPreTraining, SelfPatchForPreTraining, get_method
from ssl_hf.backbones import SmallStemResNetModel, global_features
from ssl_hf.evaluation.features import pooled_features
from ssl_hf.export import export_pretrained
from ssl_hf.layers.ema import cosine_momentum
from ssl_hf.layers.multicrop import crops_by_view


def _model(seed: int = 0, **overrides) -> DINOForPreTraining:
    torch.manual_seed(seed)
    return DINOForPreTraining(tiny_dino_resnet_config(**overrides))


def _crops(batch=2, num_local=2, local_size=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    local = torch.randn(batch, num_local, 3, local_size, local_size, generator=gen)
    return torch.randn(batch, 2, 3, 32, 32, generator=gen), local


def _batchnorm_statistics(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


# ---------------------------------------------------------------------------------------------- forward, backward


def test_forward_backward_with_local_crops_of_another_size():
    model = _model().train()
    assert type(model.backbone) is SmallStemResNetModel
    assert model.head.mlp[0].in_features == 32  # the pooled last stage, as main_dino.py's `fc.weight.shape[1]`
    global_crops, local_crops = _crops()
    out = model(global_crops, local_crops)
    assert out.student_logits.shape == (4, 2, 64)
    assert out.teacher_logits.shape == (2, 2, 64)
    assert torch.isfinite(out.loss)
    # the 12-px local crops are pooled by the same backbone, in one batch of their own (their BatchNorm statistics)
    with torch.no_grad():
        local = model.head(global_features(model.backbone, crops_by_view(local_crops))).unflatten(0, (2, 2))
    torch.testing.assert_close(out.student_logits[2:], local, atol=1e-6, rtol=0)

    out.loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead
    teachers = [p for n, p in model.named_parameters() if n.startswith("teacher_")]
    assert teachers
    assert all(not p.requires_grad and p.grad is None for p in teachers)
    assert torch.isfinite(model(global_crops).loss)  # without local crops (the 2 global crops distil each other)


# ---------------------------------------------------------------------------------------------------- EMA teacher


def test_ema_moves_teacher_parameters_and_its_batchnorm_statistics_come_from_the_global_crops():
    model = _model(ema_base=0.99).train()
    student, teacher = model.backbone.state_dict(), model.teacher_backbone.state_dict()
    assert student.keys() == teacher.keys()
    assert all(torch.equal(student[k], teacher[k]) for k in student)  # the teacher starts as a copy

    # the teacher runs in train mode on the 2 global crops only, as the reference's (never set to eval)
    reference = copy.deepcopy(model.teacher_backbone)
    global_crops, local_crops = _crops()
    model(global_crops, local_crops)
    with torch.no_grad():
        reference(crops_by_view(global_crops))
    statistics = _batchnorm_statistics(model.teacher_backbone)
    assert statistics
    assert all(torch.equal(v, _batchnorm_statistics(reference)[k]) for k, v in statistics.items())

    perturb_student(model)
    before = {n: p.clone() for n, p in model.named_parameters() if n.startswith("teacher_")}
    model.post_optimizer_step(25, 100)
    m = cosine_momentum(25, 100, 0.99)
    params = dict(model.named_parameters())
    for name, old in before.items():
        online = params[name.removeprefix("teacher_")]
        torch.testing.assert_close(params[name], m * old + (1 - m) * online, msg=name)
        assert not torch.equal(params[name], old)
    # the EMA covers parameters: the teacher's BatchNorm statistics stay its own
    assert all(torch.equal(v, statistics[k]) for k, v in _batchnorm_statistics(model.teacher_backbone).items())


# ------------------------------------------------------------------------------------------------ save and export


def test_save_and_reload_round_trip(tmp_path):
    model = _model().eval()
    perturb_student(model)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["backbone_config"]["model_type"], saved["image_size"]) == ("ssl_resnet_small_stem", 32)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(reloaded) is DINOForPreTraining
    assert type(reloaded.teacher_backbone) is SmallStemResNetModel
    assert reloaded.config.input_size == 32
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in reloaded.state_dict().items())
    crops = _crops()
    assert reloaded(*crops).loss.item() == model(*crops).loss.item()
    assert {n for n, p in reloaded.named_parameters() if not p.requires_grad} == set(model._fixed_parameters)


@pytest.mark.parametrize("preset", ["resnet-18", "resnet-18-small-stem"])
def test_export_is_the_teacher_and_evaluates_on_its_pooled_feature(preset, tmp_path):
    model = _model(backbone_config=tiny_resnet_config(preset)).eval()
    perturb_student(model)
    model.save_pretrained(tmp_path / "final")
    export = export_pretrained(tmp_path / "final", tmp_path / "export")
    exported = AutoModel.from_pretrained(export).eval()
    assert type(exported) is (ResNetModel if preset == "resnet-18" else SmallStemResNetModel)  # a stock ResNet
    assert not any(k.startswith(("head", "teacher", "backbone.")) for k in exported.state_dict())
    x = _crops()[0][:, 0]
    with torch.no_grad():
        teacher = global_features(model.teacher_backbone, x)
        torch.testing.assert_close(exported(x).pooler_output.flatten(1), teacher, atol=1e-6, rtol=0)
        # DINO's evaluation feature (`feature_pool` "cls") of a CNN is its pooled last stage
        pooled = pooled_features(exported, x, get_method("dino").feature_pool)
        torch.testing.assert_close(pooled, teacher, atol=1e-6, rtol=0)
        assert not torch.allclose(teacher, global_features(model.backbone, x), atol=1e-3)
    processor = json.loads((export / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32}
    assert "pooler_output.flatten(1)" in (export / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------------- config


def test_config_validation():
    assert tiny_dino_resnet_config().input_size == 32
    assert tiny_dino_resnet_config(image_size=None).input_size == 224  # main_dino.py's global crops
    assert tiny_dino_resnet_config(local_crop_size=13).local_crop_size == 13  # no patch grid to fit
    config = tiny_dino_resnet_config()
    reloaded = DINOConfig.from_dict(config.to_dict())
    assert (type(reloaded.backbone_config), reloaded.image_size) == (type(config.backbone_config), 32)
    # a ViT keeps its own size; configs saved before the field existed load unchanged
    assert tiny_dino_config(image_size=32).input_size == 32
    old = {k: v for k, v in tiny_dino_config().to_dict().items() if k != "image_size"}
    assert (DINOConfig.from_dict(old).image_size, DINOConfig.from_dict(old).input_size) == (None, 32)
    cases = [
        (lambda: tiny_dino_resnet_config(image_size=4), "image_size must be >= 8"),
        (lambda: tiny_dino_config(image_size=64), "image_size=64 but the ViT backbone is built for 32"),
        (lambda: tiny_dino_config(local_crop_size=12), "not a multiple of the patch size 8"),
        (lambda: tiny_dino_config(backbone_config=SiglipVisionConfig()), "supports ResNet and ViT backbones"),
    ]
    for build, message in cases:
        with pytest.raises(StrictDataclassClassValidationError, match=message) as info:
            build()
        assert isinstance(info.value.__cause__, ValueError)


def _selfpatch_resnet(seed: int = 0, **overrides) -> SelfPatchForPreTraining:
    torch.manual_seed(seed)
    fields = {"backbone_config": tiny_resnet_config("resnet-18-small-stem"), "image_size": 32, **overrides}
    return SelfPatchForPreTraining(tiny_selfpatch_config(**fields))


def test_selfpatch_on_a_resnet_takes_the_last_stage_positions_as_patch_tokens():
    model = _selfpatch_resnet(local_crop_size=12).train()
    assert model.config.input_size == 32
    assert type(model.backbone) is SmallStemResNetModel
    assert model.aggregation.blocks[0].num_heads == 1  # 64-wide heads: a 32-wide last stage has one
    global_crops, local_crops = _crops()
    with torch.no_grad():
        stage = model.backbone(crops_by_view(global_crops)).last_hidden_state  # (4, 32, 4, 4): a 4x4 grid
    tokens, norm, grid = model._tokens("", crops_by_view(global_crops))
    assert (tuple(grid), norm) == ((4, 4), model.token_norm)
    torch.testing.assert_close(tokens, stage.flatten(2).transpose(1, 2))  # row-major positions, as ViT patches
    out = model(global_crops, local_crops)
    assert out.student_logits.shape == (4, 2, 64)
    assert torch.isfinite(out.loss)
    assert torch.isfinite(out.loss_patch)
    out.loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead
    assert not model.teacher_token_norm.weight.requires_grad


def test_selfpatch_on_a_resnet_exports_the_teacher_resnet(tmp_path):
    model = _selfpatch_resnet().eval()
    perturb_student(model)
    model.save_pretrained(tmp_path / "final")
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path / "final").eval()
    assert type(reloaded.teacher_backbone) is SmallStemResNetModel
    assert reloaded.config.input_size == 32
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in reloaded.state_dict().items())
    crops = _crops()
    torch.testing.assert_close(reloaded(*crops).loss, model(*crops).loss, rtol=1e-6, atol=0)
    exported = AutoModel.from_pretrained(export_pretrained(tmp_path / "final", tmp_path / "export")).eval()
    assert type(exported) is SmallStemResNetModel
    x = crops[0][:, 0]
    with torch.no_grad():
        teacher = global_features(model.teacher_backbone, x)
        # SelfPatch's evaluation feature (the mean of the patch tokens) of a CNN is its pooled last stage
        torch.testing.assert_close(pooled_features(exported, x, get_method("selfpatch").feature_pool), teacher)
