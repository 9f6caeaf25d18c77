"""Config bases shared by several methods: a nested ViT backbone, and MAE-style masking + decoder fields."""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .backbones import RESNET_PRESETS, check_patch_grid, is_resnet


@strict
class SSLViTConfig(PreTrainedConfig):
    """A method config whose encoder is a stock ViT described by a nested `backbone_config` (DESIGN D1).

    Args:
        backbone_config: The encoder, a `ViTConfig` (dict or config). Default: ViT-B/16 at 224, LayerNorm eps 1e-6.
    """

    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig, model_type="vit", init_kwargs={"layer_norm_eps": 1e-6}
        )
    }

    backbone_config: dict | PreTrainedConfig | None = None

    def validate_backbone(self):
        bb = self.backbone_config
        if getattr(bb, "model_type", "vit") != "vit":
            raise ValueError(f"{type(self).__name__} needs a ViT backbone_config, got model_type='{bb.model_type}'")
        check_patch_grid(bb.image_size, bb.patch_size)
        if bb.hidden_size % 4:
            raise ValueError(f"hidden_size must be divisible by 4 (sin-cos table), got {bb.hidden_size}")


@strict
class MaskedImageConfig(SSLViTConfig):
    """Fields of MAE-style masking and a light Transformer decoder, shared by MAE and the methods built on it.

    Args:
        mask_ratio: Fraction of patches hidden from the encoder.
        decoder_hidden_size: Decoder width.
        decoder_num_hidden_layers: Decoder depth.
        decoder_num_attention_heads: Decoder heads.
        decoder_intermediate_size: Decoder MLP width.
    """

    mask_ratio: float = 0.75
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048

    def validate_mask_ratio(self):
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")

    def validate_decoder(self):
        if self.decoder_hidden_size % self.decoder_num_attention_heads:
            raise ValueError(
                f"decoder_hidden_size={self.decoder_hidden_size} is not divisible by "
                f"decoder_num_attention_heads={self.decoder_num_attention_heads}"
            )
        if self.decoder_hidden_size % 4:
            raise ValueError(
                f"decoder_hidden_size must be divisible by 4 (sin-cos table), got {self.decoder_hidden_size}"
            )


@strict
class MaskedAutoencoderConfig(MaskedImageConfig):
    """`MaskedImageConfig` plus the pixel target of MAE.

    Args:
        norm_pix_loss: Regress per-patch normalised pixels (MAE's released models use True).
    """

    norm_pix_loss: bool = True


@strict
class SSLEncoderConfig(PreTrainedConfig):
    """A method config whose encoder is any stock image backbone giving one global feature (BYOL-style methods).

    Args:
        backbone_config: `ResNetConfig` (default ResNet-18), `SmallStemResNetConfig` (32x32 images) or `ViTConfig`
            (the cls token is the feature); a dict with `model_type` or a config.
        image_size: Side of the training views. Default: the ViT's `image_size`, or 224 for a ResNet.
    """

    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig, model_type="resnet", init_kwargs=RESNET_PRESETS["resnet-18"]
        )
    }

    backbone_config: dict | PreTrainedConfig | None = None
    image_size: int | None = None

    def validate_encoder(self):
        bb = self.backbone_config
        if bb.model_type == "vit":
            if self.image_size is not None and self.image_size != bb.image_size:
                raise ValueError(
                    f"image_size={self.image_size} but the ViT backbone is built for {bb.image_size}: set the "
                    "backbone's image_size (--image_size sets both)."
                )
            check_patch_grid(bb.image_size, bb.patch_size)
        elif not is_resnet(bb):
            raise ValueError(
                f"{type(self).__name__} supports ResNet and ViT backbones, got model_type='{bb.model_type}'"
            )
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")

    @property
    def input_size(self) -> int:
        """Side of the training views in pixels."""
        if self.backbone_config.model_type == "vit":
            return self.backbone_config.image_size
        return self.image_size or 224
