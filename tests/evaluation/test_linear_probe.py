"""Linear probe: MAE's head (BatchNorm without affine + linear) trained on cached features."""

import torch

from ssl_hf.evaluation import LinearProbe, linear_probe_accuracy


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
