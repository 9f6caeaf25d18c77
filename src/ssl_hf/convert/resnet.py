"""torchvision ResNet state dicts -> transformers `ResNetModel`.

torchvision's layout (pytorch/vision `torchvision/models/resnet.py`, also used by DINO's ResNet-50, solo-learn and
lightly): a `conv1` 7x7 stride-2 stem with `bn1` and a 3x3 max-pool, stages `layer1..4` of `BasicBlock`s (`conv1`,
`conv2`) or `Bottleneck`s (`conv1` 1x1, `conv2` 3x3 carrying the stride, `conv3` 1x1, width 4x the inner one, i.e.
"ResNet v1.5"), each conv followed by its `bn<j>`, and a projection shortcut `downsample.0` (1x1 conv) / `downsample.1`
(BatchNorm) where the shape changes; `fc` is the classifier. transformers' `ResNetModel` builds the same network
(stride in the 3x3 conv: `downsample_in_bottleneck=False`; no stride in the first stage) with other names.
"""

from dataclasses import dataclass, field

from torch import Tensor
from transformers import ResNetConfig, ResNetModel

from ..backbones import backbone_config
from .layouts import ConversionError, preview


_BN = ("weight", "bias", "running_mean", "running_var")


@dataclass
class TorchvisionResNet:
    """A torchvision ResNet read from a state dict.

    Attributes:
        config: The transformers `ResNetConfig` of the same network.
        consumed: Keys of the state dict that the conversion uses.
        notes: What the conversion had to do beyond renaming (for the model card).
    """

    config: ResNetConfig
    consumed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _stages(state: dict[str, Tensor], p: str) -> list[int]:
    """Blocks per stage (`layer1`, `layer2`, ... as long as they exist)."""
    depths = []
    while f"{p}layer{len(depths) + 1}.0.conv1.weight" in state:
        stage, blocks = len(depths) + 1, 0
        while f"{p}layer{stage}.{blocks}.conv1.weight" in state:
            blocks += 1
        depths.append(blocks)
    return depths


def read_torchvision_resnet(state_dict: dict[str, Tensor], prefix: str = "") -> TorchvisionResNet:
    """Reads the architecture of a torchvision ResNet (basic or bottleneck blocks) from its tensor shapes.

    Raises:
        ConversionError: No ResNet under `prefix`, a stem or block transformers' ResNet cannot express (a 3x3 CIFAR
            stem, grouped or widened bottlenecks), or missing tensors.
    """
    p = prefix
    stem = state_dict.get(f"{p}conv1.weight")
    if stem is None or stem.ndim != 4:
        raise ConversionError(f"No torchvision ResNet at '{p}': `{p}conv1.weight` is missing.")
    if stem.shape[-1] != 7:
        raise ConversionError(
            f"`{p}conv1` is a {stem.shape[-1]}x{stem.shape[-1]} stem (solo-learn's and lightly's CIFAR models use a "
            "3x3 stride-1 stem with padding 2 and no max-pool). transformers' ResNet has the 7x7 ImageNet stem only, "
            "so this network cannot be exported as a plain ResNetModel; only ImageNet-stem checkpoints convert."
        )
    depths = _stages(state_dict, p)
    if not depths:
        raise ConversionError(f"No residual stages at '{p}layer1.'.")
    bottleneck = f"{p}layer1.0.conv3.weight" in state_dict
    required = [f"{p}conv1.weight", *(f"{p}bn1.{n}" for n in _BN)]
    convs = ("conv1", "conv2", "conv3") if bottleneck else ("conv1", "conv2")
    for s, depth in enumerate(depths):
        for b in range(depth):
            block = f"{p}layer{s + 1}.{b}."
            for j, conv in enumerate(convs, start=1):
                required += [f"{block}{conv}.weight", *(f"{block}bn{j}.{n}" for n in _BN)]
            if f"{block}downsample.0.weight" in state_dict:
                required += [f"{block}downsample.0.weight", *(f"{block}downsample.1.{n}" for n in _BN)]
    missing = [k for k in required if k not in state_dict]
    if missing:
        shown = preview(missing)
        raise ConversionError(f"The ResNet at '{p}' is incomplete: missing {shown}.")
    hidden_sizes = [state_dict[f"{p}layer{s + 1}.0.{convs[-1]}.weight"].shape[0] for s in range(len(depths))]
    for s, width in enumerate(hidden_sizes):
        inner = state_dict[f"{p}layer{s + 1}.0.conv1.weight"].shape[0]
        middle = state_dict[f"{p}layer{s + 1}.0.conv2.weight"]
        expected = width // 4 if bottleneck else width
        if inner != expected or middle.shape[1] != middle.shape[0]:
            raise ConversionError(
                f"Stage layer{s + 1} has inner width {inner} (grouped: {middle.shape[1] != middle.shape[0]}) for "
                f"output width {width}: transformers' ResNet only expresses standard ResNets (inner width "
                f"{'1/4 of the output' if bottleneck else 'equal to the output'}, no groups), not ResNeXt or wide "
                "ResNets."
            )
    config = backbone_config(
        "resnet-50" if bottleneck else "resnet-18",
        layer_type="bottleneck" if bottleneck else "basic",
        depths=depths,
        hidden_sizes=hidden_sizes,
        embedding_size=stem.shape[0],
        num_channels=stem.shape[1],
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
    )
    config.architectures = ["ResNetModel"]
    counters = {k.replace(".running_mean", ".num_batches_tracked") for k in required if k.endswith(".running_mean")}
    consumed = set(required) | (counters & set(state_dict))
    notes = []
    if f"{p}fc.weight" in state_dict:
        notes.append("the classifier `fc` of the source was dropped (the export is the feature extractor).")
    return TorchvisionResNet(config, consumed, notes)


def _target_name(name: str) -> str:
    """The `ResNetModel` name of a torchvision ResNet key (prefix removed).

    E.g. `layer2.0.bn3.weight` -> `encoder.stages.1.layers.0.layer.2.normalization.weight`.
    """
    first, _, rest = name.partition(".")
    if first in ("conv1", "bn1"):
        part = "convolution" if first == "conv1" else "normalization"
        return f"embedder.embedder.{part}.{rest}"
    block, _, rest = rest.partition(".")
    stage = int(first.removeprefix("layer")) - 1
    base = f"encoder.stages.{stage}.layers.{block}."
    module, _, leaf = rest.partition(".")
    if module == "downsample":
        index, _, leaf = leaf.partition(".")
        return f"{base}shortcut.{'convolution' if index == '0' else 'normalization'}.{leaf}"
    kind, j = ("convolution", module[4:]) if module.startswith("conv") else ("normalization", module[2:])
    return f"{base}layer.{int(j) - 1}.{kind}.{leaf}"


def torchvision_resnet_to_hf(
    state_dict: dict[str, Tensor], prefix: str = ""
) -> tuple[dict[str, Tensor], ResNetConfig]:
    """Maps a torchvision ResNet (keys under `prefix`) to transformers `ResNetModel` weights and config.

    Args:
        state_dict: `{name: tensor}`.
        prefix: Key prefix of the network, matched at the start of keys (`""`, `backbone.`, ...).

    Returns:
        The weights of `ResNetModel(config)` (BatchNorm running statistics included) and its `ResNetConfig`. The
        classifier `fc` and every key outside the network are ignored.
    """
    resnet = read_torchvision_resnet(state_dict, prefix)
    weights = {_target_name(k[len(prefix) :]): state_dict[k].clone() for k in sorted(resnet.consumed)}
    return weights, resnet.config


def build_resnet(weights: dict[str, Tensor], config: ResNetConfig) -> ResNetModel:
    """The `ResNetModel` of converted weights, loaded strictly (`num_batches_tracked` may be absent), in eval mode."""
    model = ResNetModel(config)
    weights = {k: v if k.endswith("num_batches_tracked") else v.float() for k, v in weights.items()}
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ConversionError(f"The converted weights do not fit ResNetModel: {err}") from err
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ConversionError(
            f"The converted weights do not fit ResNetModel: missing {missing[:6]}, unexpected "
            f"{result.unexpected_keys[:6]} (a shortcut where transformers' ResNet has none, or the reverse)."
        )
    return model.eval()
