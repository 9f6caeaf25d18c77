"""Fine-tuning with layer-wise lr decay: MAE/BEiT parameter groups, and end-to-end runs on tiny backbones."""

import math

import datasets
import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    Dinov2Config,
    Dinov2Model,
    ResNetConfig,
    ResNetModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

from ssl_hf.data.datasets import ImageSource, load_image_source
from ssl_hf.data.views import EvalView
from ssl_hf.evaluation.finetune import finetune_accuracy, layer_decay_param_groups


BASE_LR = 1e-3
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8)


def _lrs_by_name(groups: list[dict]) -> dict[str, tuple[float, float]]:
    """`{name: (lr, weight_decay)}`; fails if a name appears in two groups."""
    out = {}
    for group in groups:
        assert len(group["params"]) == len(group["param_names"])
        for name in group["param_names"]:
            assert name not in out, f"{name} is in two groups"
            out[name] = (group["lr"], group["weight_decay"])
    return out


def _check_groups(model: nn.Module, blocks: str, final_norm: str) -> dict[str, tuple[float, float]]:
    head = nn.Linear(32, 10)
    groups = layer_decay_param_groups(model, head, BASE_LR, layer_decay=0.75, weight_decay=0.05)
    lrs = _lrs_by_name(groups)
    # every trainable parameter in exactly one group (by identity, not only by name)
    grouped = [p for g in groups for p in g["params"]]
    assert len({id(p) for p in grouped}) == len(grouped)
    expected = {id(p) for p in model.parameters()} | {id(p) for p in head.parameters()}
    assert {id(p) for p in grouped} == expected
    assert set(lrs) == {n for n, _ in model.named_parameters()} | {"classifier.weight", "classifier.bias"}

    for name, (lr, decay) in lrs.items():
        if name.startswith("embeddings."):
            assert lr == pytest.approx(BASE_LR * 0.75**4), name
        elif name.startswith(f"{blocks}."):
            i = int(name[len(blocks) + 1 :].split(".")[0])
            assert lr == pytest.approx(BASE_LR * 0.75 ** (3 - i)), name
        else:  # final norm, pooler / pooling head, classifier
            assert lr == pytest.approx(BASE_LR), name
        param = dict(model.named_parameters()).get(name)
        is_bias_or_norm = name.endswith("bias") or (param is not None and param.ndim < 2)
        if is_bias_or_norm or any(key in name for key in ("cls_token", "position_embedding", "mask_token")):
            assert decay == 0.0, name
    assert lrs[f"{final_norm}.weight"] == (pytest.approx(BASE_LR), 0.0)
    assert lrs["classifier.weight"] == (pytest.approx(BASE_LR), 0.05)
    assert lrs["classifier.bias"] == (pytest.approx(BASE_LR), 0.0)
    for group in groups:  # inspection fields, and AdamW accepts the dicts
        assert group["lr"] == pytest.approx(BASE_LR * group["lr_scale"])
        assert group["lr_scale"] == pytest.approx(0.75 ** (4 - group["layer_id"]))
    torch.optim.AdamW(groups, lr=BASE_LR)
    return lrs


def test_vit_layer_decay_groups():
    model = ViTModel(ViTConfig(intermediate_size=37, **TINY))
    blocks = "layers" if any(n.startswith("layers.") for n, _ in model.named_parameters()) else "encoder.layer"
    lrs = _check_groups(model, blocks, "layernorm")
    for name in (
        "embeddings.cls_token",
        "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embeddings.projection.bias",
    ):
        assert lrs[name] == (pytest.approx(BASE_LR * 0.75**4), 0.0 if "projection.weight" not in name else 0.05)
    block_weights = [n for n in lrs if n.startswith(f"{blocks}.") and n.endswith("weight") and "layernorm" not in n]
    assert block_weights
    assert all(lrs[n][1] == 0.05 for n in block_weights)


def test_siglip_layer_decay_groups():
    model = SiglipVisionModel(SiglipVisionConfig(intermediate_size=37, **TINY))
    lrs = _check_groups(model, "encoder.layers", "post_layernorm")
    assert lrs["embeddings.position_embedding.weight"] == (pytest.approx(BASE_LR * 0.75**4), 0.0)  # a 2-D table
    assert lrs["embeddings.patch_embedding.weight"] == (pytest.approx(BASE_LR * 0.75**4), 0.05)


def test_dinov2_layer_decay_groups():
    model = Dinov2Model(Dinov2Config(mlp_ratio=1, **TINY))
    lrs = _check_groups(model, "encoder.layer", "layernorm")
    assert lrs["embeddings.mask_token"][1] == 0.0
    assert lrs["encoder.layer.0.layer_scale1.lambda1"] == (pytest.approx(BASE_LR * 0.75**3), 0.0)


def test_resnet_stages_are_layers_and_unknown_models_fail():
    model = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"))
    groups = layer_decay_param_groups(model, nn.Linear(16, 3), BASE_LR, layer_decay=0.5)
    lrs = _lrs_by_name(groups)
    assert len(lrs) == len(list(model.parameters())) + 2
    assert lrs["embedder.embedder.convolution.weight"][0] == pytest.approx(BASE_LR * 0.5**3)
    assert lrs["encoder.stages.1.layers.0.layer.0.convolution.weight"][0] == pytest.approx(BASE_LR * 0.5)
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_param_groups(nn.Sequential(nn.Linear(4, 4)), None, BASE_LR)


def test_frozen_parameters_are_left_out():
    model = ViTModel(ViTConfig(intermediate_size=37, **TINY))
    model.embeddings.requires_grad_(False)
    groups = layer_decay_param_groups(model, None, BASE_LR)
    names = {n for g in groups for n in g["param_names"]}
    assert names
    assert not any(n.startswith("embeddings.") for n in names)
    assert min(g["layer_id"] for g in groups) == 1


# ------------------------------------------------------------------------------------- end-to-end fine-tuning


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keeps the in-memory datasets of these tests out of the user's ~/.cache/huggingface/datasets."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")


def _tiny_vit(seed: int = 0) -> ViTModel:
    torch.manual_seed(seed)
    return ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                              image_size=32, patch_size=8))  # fmt: skip


def _colour_source(per_class: int, seed: int) -> ImageSource:
    """4 classes of 32x32 images told apart by their colour (noisy), in the raw-pixel format of the built-in sets."""
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 200]])
    labels = np.repeat(np.arange(4), per_class)
    pixels = np.clip(colours[labels][:, None, None, :] + rng.integers(-40, 41, (len(labels), 32, 32, 3)), 0, 255)
    ds = datasets.Dataset.from_dict(
        {"pixels": pixels.astype(np.uint8).reshape(len(labels), -1).tolist(), "label": labels.tolist()},
        features=datasets.Features(
            {"pixels": datasets.List(datasets.Value("uint8"), length=3072), "label": datasets.Value("int64")}
        ),
    )
    return ImageSource(ds, "pixels", 32)


def test_finetune_on_digits_runs_and_leaves_the_backbone_alone():
    model = _tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, test = load_image_source("digits", "train"), load_image_source("digits", "test")
    result = finetune_accuracy(
        model, train, test, EvalView(32), 10, epochs=1, batch_size=64, max_train_images=512, max_test_images=256
    )
    assert result["num_train"] == 512
    assert result["num_test"] == 256
    assert result["epochs"] == 1
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    assert all(math.isfinite(v) for v in result["train_loss"] + result["train_top1"])
    assert result["lr"] == pytest.approx(1e-3 * 64 / 256)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the copy trained, not the model passed in
    assert all(p.grad is None for p in model.parameters())


def test_finetune_learns_a_separable_task():
    model = _tiny_vit()
    train, test = _colour_source(32, seed=0), _colour_source(16, seed=1)
    result = finetune_accuracy(
        model, train, test, EvalView(32), 4, epochs=3, batch_size=16, base_lr=2e-2, warmup_epochs=0.5, pool="mean"
    )
    assert result["train_loss"][-1] < result["train_loss"][0]
    assert result["train_top1"][-1] > 0.5  # chance: 0.25
    assert result["top1"] > 0.5
    assert result["num_train"] == 128
    assert result["num_test"] == 64


def test_finetune_rejects_labels_outside_the_head():
    with pytest.raises(ValueError, match="num_classes"):
        finetune_accuracy(_tiny_vit(), _colour_source(4, 0), _colour_source(2, 1), EvalView(32), 3, epochs=1)


@pytest.mark.parametrize("kind", ["siglip", "resnet"])
def test_finetune_cls_free_and_cnn_backbones(kind):
    torch.manual_seed(0)
    if kind == "siglip":  # no cls token: the head sits on the mean of the patch tokens, whatever `pool`
        model = SiglipVisionModel(SiglipVisionConfig(intermediate_size=37, **{**TINY, "num_hidden_layers": 2}))
    else:
        model = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = finetune_accuracy(
        model, _colour_source(8, 0), _colour_source(4, 1), EvalView(32), 4, epochs=1, batch_size=8
    )
    assert result["num_train"] == 32
    assert math.isfinite(result["train_loss"][0])
    assert 0.0 <= result["top1"] <= 1.0
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # incl. BatchNorm running stats
