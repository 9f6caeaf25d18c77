"""Checks every registered method passes: adding a method to the registry (and a tiny config to conftest) adds tests."""

import json

import pytest
import torch
from conftest import TINY_CONFIGS
from transformers import AutoModel, AutoModelForPreTraining

from ssl_hf import METHODS
from ssl_hf.export import export_pretrained
from ssl_hf.training import TrainingArguments, pretrain


def test_every_method_has_a_tiny_config():
    assert set(METHODS) == set(TINY_CONFIGS)


@pytest.fixture(params=sorted(TINY_CONFIGS))
def method(request):
    torch.manual_seed(0)
    spec = METHODS[request.param]
    return spec, spec.model_class(TINY_CONFIGS[request.param]())


def _inputs(model, batch=2):
    """Random model inputs as positional arguments: `(pixels, noise)` for masked models, `(views,)` for K-view ones,
    `(global crops, local crops)` for multi-crop ones."""
    config = model.config
    if hasattr(config, "num_local_crops"):
        size = config.local_crop_size
        return torch.randn(batch, 2, 3, 32, 32), torch.randn(batch, config.num_local_crops, 3, size, size)
    if hasattr(config, "num_views"):
        return (torch.randn(max(batch, 4), config.num_views, 3, 32, 32),)  # BatchNorm heads need > 1 sample
    L = (config.backbone_config.image_size // config.backbone_config.patch_size) ** 2
    return torch.randn(batch, 3, 32, 32), torch.rand(batch, L)


def test_forward_gives_a_finite_loss_first(method):
    _, model = method
    out = model(*_inputs(model))
    assert next(iter(out.keys())) == "loss"
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(v) for k, v in out.items() if k.startswith("loss"))


def test_backward_reaches_every_trainable_parameter(method):
    _, model = method
    model(*_inputs(model)).loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead


def test_save_and_reload_give_the_same_loss(method, tmp_path):
    _, model = method
    model.eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == model.config.model_type
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    inputs = _inputs(model)
    torch.manual_seed(1)  # the same random draws (e.g. MSBReg's Brownian directions) for both
    expected = model(*inputs).loss.item()
    torch.manual_seed(1)
    # equal up to float32 rounding: reloaded tensors may take another (equally exact) kernel path (SelfPatch: 1 ulp)
    assert reloaded(*inputs).loss.item() == pytest.approx(expected, rel=1e-6, abs=0)
    frozen = {n for n, p in reloaded.named_parameters() if not p.requires_grad}
    assert frozen == set(model._fixed_parameters)


def test_export_loads_as_a_stock_model_with_the_same_features(method, tmp_path):
    _, model = method
    model.eval().save_pretrained(tmp_path / "final")
    export_pretrained(tmp_path / "final", tmp_path / "export")
    exported = AutoModel.from_pretrained(tmp_path / "export").eval()
    x = _inputs(model)[0]
    x = x[:, 0] if x.ndim == 5 else x  # one view
    expected = model.get_export_backbone()(x).last_hidden_state
    torch.testing.assert_close(exported(x).last_hidden_state, expected, atol=1e-6, rtol=0)


def test_two_training_steps_through_the_loop(method, tmp_path):
    spec, model = method
    args = TrainingArguments(
        dataset="digit-scenes", output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, save_steps=2
    )
    final = pretrain(spec, model.config, args)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert (final / "model.safetensors").is_file()
