"""Named backbone presets (stock transformers configs, D1) and the global feature every method pools from them."""

from difflib import get_close_matches
from typing import Any

from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    PreTrainedConfig,
    ResNetConfig,
    ResNetModel,
    SiglipVisionConfig,
    ViTConfig,
    ViTModel,
)
from transformers.models.resnet.modeling_resnet import ResNetConvLayer


# width / depth / heads; the MLP is 4x wide as in ViT and MAE.
VIT_PRESETS: dict[str, tuple[int, int, int]] = {
    "vit-tiny": (192, 12, 3),
    "vit-small": (384, 12, 6),
    "vit-base": (768, 12, 12),
    "vit-large": (1024, 24, 16),
}


# `ResNetConfig` fields of the standard ResNets (He et al. 2016); torchvision/microsoft checkpoints use the same.
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "resnet-18": dict(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], embedding_size=64),
    "resnet-50": dict(
        layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64
    ),
}
SMALL_STEM_SUFFIX = "-small-stem"  # e.g. resnet-18-small-stem: 3x3 stride-1 stem, no max-pool (32x32 images)
BACKBONES = [*VIT_PRESETS, *RESNET_PRESETS, *(f"{n}{SMALL_STEM_SUFFIX}" for n in RESNET_PRESETS)]


class SmallStemResNetConfig(ResNetConfig):
    """`ResNetConfig` of a ResNet whose stem is a 3x3 stride-1 convolution without max-pool (CIFAR-style).

    transformers' ResNet stem is fixed (7x7 stride 2 + max-pool), which leaves a 1x1 map for 32x32 inputs; this
    variant keeps the resolution. It is an ssl_hf type: `import ssl_hf` before `AutoModel.from_pretrained`.
    """

    model_type = "ssl_resnet_small_stem"


class SmallStemResNetModel(ResNetModel):
    """`ResNetModel` with the small stem of `SmallStemResNetConfig`; everything else is the stock model."""

    config_class = SmallStemResNetConfig

    def __init__(self, config: SmallStemResNetConfig):
        super().__init__(config)
        self.embedder.embedder = ResNetConvLayer(
            config.num_channels, config.embedding_size, kernel_size=3, stride=1, activation=config.hidden_act
        )
        self.embedder.pooler = nn.Identity()
        self.post_init()


def is_resnet(config: PreTrainedConfig) -> bool:
    """True for `ResNetConfig` and its subclasses (the small-stem variant)."""
    return isinstance(config, ResNetConfig)


def feature_dim(config: PreTrainedConfig) -> int:
    """Width of the global image feature of a backbone (ResNet: last stage; ViT: hidden size)."""
    return config.hidden_sizes[-1] if is_resnet(config) else config.hidden_size


def global_features(backbone: nn.Module, pixel_values: Tensor, interpolate_pos_encoding: bool = False) -> Tensor:
    """`(B, D)` global image feature: ResNet's average-pooled last stage, ViT's cls token after the final norm.

    Args:
        backbone: A `ResNetModel` (or the small-stem variant) or a `ViTModel`.
        pixel_values: `(B, C, H, W)` images.
        interpolate_pos_encoding: ViT: interpolate the position table for inputs of another size than its config's
            (multi-crop's local crops). A ResNet pools any input size.
    """
    if isinstance(backbone, ResNetModel):
        return backbone(pixel_values).pooler_output.flatten(1)
    if isinstance(backbone, ViTModel):
        return backbone(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state[:, 0]
    raise TypeError(f"No global feature rule for {type(backbone).__name__}")


def build_backbone(config: PreTrainedConfig) -> nn.Module:
    """The stock model of a backbone config (ViT without its untrained pooler)."""
    if isinstance(config, SmallStemResNetConfig):
        return SmallStemResNetModel(config)
    if is_resnet(config):
        return ResNetModel(config)
    return ViTModel(config, add_pooling_layer=False)


def backbone_config(name: str, image_size: int = 224, patch_size: int = 16, **overrides: Any) -> PreTrainedConfig:
    """Builds the config of a named backbone preset.

    ViT presets follow MAE/DINO, which replace two transformers defaults: LayerNorm eps 1e-6 (not 1e-12) and exact
    GELU. ResNet presets are `ResNetConfig`s (the input size belongs to the method config, e.g. BYOL's `image_size`).

    Args:
        name: One of `BACKBONES`: `vit-tiny|small|base|large`, `resnet-18`, `resnet-50`, and
            `resnet-18-small-stem` / `resnet-50-small-stem` (3x3 stride-1 stem without max-pool for 32x32 images).
        image_size: Square input resolution in pixels (ViT).
        patch_size: Patch side in pixels; must divide `image_size` (ViT).
        **overrides: Any other field of the preset's config class.
    """
    resnet = name.removesuffix(SMALL_STEM_SUFFIX)
    if resnet in RESNET_PRESETS:
        config_class = SmallStemResNetConfig if name.endswith(SMALL_STEM_SUFFIX) else ResNetConfig
        return config_class(**{**RESNET_PRESETS[resnet], **overrides})
    if name not in VIT_PRESETS:
        close = get_close_matches(name, BACKBONES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown backbone preset '{name}'.{hint} Available: {', '.join(BACKBONES)}.")
    check_patch_grid(image_size, patch_size)
    hidden, depth, heads = VIT_PRESETS[name]
    fields = dict(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        qkv_bias=True,
        image_size=image_size,
        patch_size=patch_size,
        encoder_stride=patch_size,
    )
    fields.update(overrides)
    return ViTConfig(**fields)


def cls_free_vit_config(config: ViTConfig) -> SiglipVisionConfig:
    """The `SiglipVisionConfig` of a ViT without cls token and without attention-pooling head.

    transformers' `SiglipVisionModel` is a plain ViT whose sequence holds only the patch tokens (learned position
    table, interpolable), pre-norm blocks with qkv biases and a final LayerNorm: the architecture of SelfPatch's
    backbone. Width, depth, heads, MLP, activation, LayerNorm epsilon and the patch grid are taken from `config`.
    """
    return SiglipVisionConfig(
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_channels=config.num_channels,
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        attention_dropout=config.attention_probs_dropout_prob,
        vision_use_head=False,
    )


def check_patch_grid(image_size: int, patch_size: int) -> None:
    """Raises a helpful error unless `patch_size` tiles `image_size` exactly."""
    if image_size % patch_size:
        divisors = [p for p in range(2, min(image_size, 33)) if image_size % p == 0]
        raise ValueError(
            f"patch_size={patch_size} does not divide image_size={image_size}: the patch grid must tile the image. "
            f"Use a patch size among {divisors} or change --image_size."
        )


AutoConfig.register(SmallStemResNetConfig.model_type, SmallStemResNetConfig, exist_ok=True)
AutoModel.register(SmallStemResNetConfig, SmallStemResNetModel, exist_ok=True)
