"""Linear probe: MAE's head (BatchNorm without affine + linear) trained on cached features."""

import pytest
import torch

from ssl_hf.evaluation import LinearProbe, linear_probe_accuracy
from ssl_hf.evaluation.linear_probe import train_linear_probe


def _blobs(n_per_class=40, classes=4, dim=8, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    x = torch.cat([c + spread * torch.randn(n_per_class, dim, generator=g) for c in centres])
    return x, torch.arange(classes).repeat_interleave(n_per_class)


def test_batchnorm_has_no_affine_parameters():
    probe = LinearProbe(16, 3)
    assert not list(probe.norm.parameters())
    assert [name for name, _ in probe.named_parameters()] == ["head.weight", "head.bias"]
    assert probe.head.weight.std() < 0.02


def test_linearly_separable_features_are_learned():
    x, y = _blobs()
    xt, yt = _blobs(seed=0)
    result = linear_probe_accuracy(x, y, xt, yt, epochs=30, batch_size=32)
    assert result["top1"] == 1.0


def test_shuffled_labels_give_chance_on_held_out_data():
    x, y = _blobs(n_per_class=50, classes=4)
    xt, yt = _blobs(n_per_class=50, classes=4, seed=1)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    assert linear_probe_accuracy(x, y, xt, yt, epochs=20, batch_size=32)["top1"] < 0.5


def test_features_get_no_gradient():
    x, y = _blobs()
    x.requires_grad_(False)
    linear_probe_accuracy(x, y, x, y, epochs=2, batch_size=32)
    assert x.grad is None


def test_lars_probe_fits_separable_features_at_the_large_batch_lr():
    x, y = _blobs()
    xt, yt = _blobs(seed=0)
    # MAE: blr 0.1 at an effective batch of 16384, i.e. lr 6.4 (LARS steps are lr * 1e-3 * ||W||)
    result = linear_probe_accuracy(x, y, xt, yt, epochs=30, batch_size=32, base_lr=6.4 * 256 / 32, optimizer="lars")
    assert result["top1"] == 1.0


def test_lars_step_is_trust_ratio_scaled_on_the_weight_and_plain_sgd_on_the_bias():
    x, y = _blobs()
    torch.manual_seed(0)
    w0 = LinearProbe(x.shape[1], 4).head.weight.detach().clone()  # the probe's initialisation for seed 0
    one_step = dict(epochs=1, batch_size=len(x), base_lr=0.1 * 256 / len(x), warmup_epochs=0)  # lr 0.1, one step
    lars = train_linear_probe(x, y, 4, optimizer="lars", **one_step)
    sgd = train_linear_probe(x, y, 4, **one_step)
    step = (lars.head.weight - w0).norm().item()
    assert step == pytest.approx(0.1 * 1e-3 * w0.norm().item(), rel=1e-4)  # lr * trust coefficient * ||W||
    assert (sgd.head.weight - w0).norm() > 10 * step
    assert torch.allclose(lars.head.bias, sgd.head.bias)  # the bias is not adapted: the same SGD step


def test_unknown_probe_optimizer():
    x, y = _blobs()
    with pytest.raises(ValueError, match="Unknown linear-probe optimizer 'adam'"):
        linear_probe_accuracy(x, y, x, y, epochs=1, optimizer="adam")


def test_the_backbone_gets_no_gradient_and_lars_runs_from_evaluate(tmp_path):
    """Features come from a frozen pass (no graph), so probing never touches the backbone's weights."""
    from transformers import ViTConfig, ViTModel

    from ssl_hf.data.datasets import load_image_source
    from ssl_hf.evaluation import evaluate_backbone, extract_features
    from ssl_hf.evaluation.features import load_backbone

    torch.manual_seed(0)
    tiny = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24, image_size=32)
    ViTModel(ViTConfig(**tiny, patch_size=8)).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"size": {"height": 32, "width": 32}}')
    model, view = load_backbone(tmp_path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    features, labels = extract_features(model, load_image_source("digits", "test"), view, batch_size=512)
    assert not features.requires_grad
    linear_probe_accuracy(features, labels, features, labels, epochs=1)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    (row,) = evaluate_backbone(str(tmp_path), protocols=("linear",), probe_epochs=2, probe_optimizer="lars")
    assert row["settings"].startswith("BN+linear, LARS 2 ep")
    assert 0 <= row["top1"] <= row["top5"] <= 1
