"""`ssl-hf convert` for ResNet sources: torchvision dicts, DINO ResNet-50, solo-learn and lightly checkpoints.

Pooled features of the converted `ResNetModel` are compared with `official_checkpoints.torchvision_resnet_forward`.
"""

import json

import pytest
import torch
from official_checkpoints import dino_full_checkpoint, torchvision_resnet_forward, torchvision_resnet_state_dict
from transformers import AutoModel, ResNetModel

from ssl_hf.convert import ConversionError, convert_checkpoint, torchvision_resnet_to_hf


ATOL = 1e-5
_CHILDREN = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


def _prefixed(sd: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": v for k, v in sd.items()}


def _sequential(sd: dict) -> dict:
    """lightly's examples: `nn.Sequential(*resnet.children()[:-1])` (no fc)."""
    out = {}
    for k, v in sd.items():
        first, _, rest = k.partition(".")
        if first in _CHILDREN:
            out[f"{_CHILDREN[first]}.{rest}"] = v
    return out


def _checkpoint(layout: str, sd: dict) -> dict:
    encoder = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    noise = {k: v + 1 for k, v in encoder.items()}  # other networks: must not be the one converted
    lightning = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.1.0"}
    if layout == "torchvision":
        return dict(sd)
    if layout == "dino_full":  # the ResNet teacher is DDP-wrapped in main_dino.py (SyncBatchNorm)
        full = dino_full_checkpoint(encoder)
        full["teacher"] = _prefixed(full["teacher"], "module.")
        return full
    if layout == "solo-learn":
        state = {**_prefixed(encoder, "backbone."), **_prefixed(noise, "momentum_backbone.")}
        state.update({"projector.0.weight": torch.zeros(4, 8), "predictor.0.weight": torch.zeros(4, 4)})
        state.update({"classifier.weight": torch.zeros(10, 8), "classifier.bias": torch.zeros(10)})
        return {"state_dict": state, **lightning}
    if layout == "lightly-sequential":
        state = {**_prefixed(_sequential(sd), "backbone."), **_prefixed(_sequential(noise), "backbone_momentum.")}
        state["projection_head.layers.0.weight"] = torch.zeros(4, 8)
        return {"state_dict": state, **lightning}
    if layout == "lightly":  # benchmarks/imagenet/resnet50/byol.py
        state = {**_prefixed(encoder, "backbone."), **_prefixed(noise, "teacher_backbone.")}
        state["online_classifier.classification_head.weight"] = torch.zeros(10, 8)
        return {"state_dict": state, **lightning}
    raise AssertionError(layout)


@pytest.mark.parametrize("bottleneck", [False, True], ids=["basic", "bottleneck"])
@pytest.mark.parametrize(
    ("source_format", "layout"),
    [
        ("torchvision-resnet", "torchvision"),
        ("dino", "dino_full"),
        ("solo-learn", "solo-learn"),
        ("lightly", "lightly-sequential"),
        ("lightly", "lightly"),
    ],
)
def test_resnet_layouts_convert_to_the_torchvision_forward(source_format, layout, bottleneck, tmp_path):
    sd = torchvision_resnet_state_dict(bottleneck)
    path = tmp_path / ("model.ckpt" if "lightly" in layout or layout == "solo-learn" else "model.pth")
    torch.save(_checkpoint(layout, sd), path)
    out = convert_checkpoint(path, tmp_path / "export", source_format)
    model = AutoModel.from_pretrained(out).eval()
    assert type(model) is ResNetModel
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pooled = model(pixel_values=x).pooler_output.flatten(1)
    expected = torchvision_resnet_forward(sd, x)
    assert (pooled - expected).abs().max().item() < ATOL
    config = json.loads((out / "config.json").read_text())
    assert config["layer_type"] == ("bottleneck" if bottleneck else "basic")
    assert config["depths"] == ([1, 2, 1, 1] if bottleneck else [2, 1, 1, 1])
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 224, "width": 224}
    assert path.name in (out / "README.md").read_text()


def test_torchvision_resnet_to_hf_keeps_running_statistics():
    sd = torchvision_resnet_state_dict(bottleneck=True)
    weights, config = torchvision_resnet_to_hf(sd)
    assert set(weights) == set(ResNetModel(config).state_dict())
    assert config.hidden_sizes == [16, 32, 64, 128]
    torch.testing.assert_close(
        weights["encoder.stages.1.layers.0.shortcut.normalization.running_var"],
        sd["layer2.0.downsample.1.running_var"],
    )
    torch.testing.assert_close(
        weights["encoder.stages.0.layers.0.layer.2.convolution.weight"], sd["layer1.0.conv3.weight"]
    )


def test_cifar_stem_is_refused_with_the_reason(tmp_path):
    sd = torchvision_resnet_state_dict(bottleneck=False)
    sd["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save({"state_dict": _prefixed(sd, "backbone.")}, tmp_path / "cifar.ckpt")
    with pytest.raises(ConversionError, match="3x3 stem"):
        convert_checkpoint(tmp_path / "cifar.ckpt", tmp_path / "out", "solo-learn")
    assert not (tmp_path / "out").exists()
