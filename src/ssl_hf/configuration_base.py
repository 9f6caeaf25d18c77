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
        check_resnet_or_vit(self)

    @property
    def input_size(self) -> int:
        """Side of the training views in pixels."""
        return resnet_or_vit_input_size(self)


def check_resnet_or_vit(config: PreTrainedConfig) -> None:
    """Checks a method config whose `backbone_config` is a ResNet or a ViT and whose `image_size` sizes the views.

    A ViT carries its own input size (`image_size` must then be None or equal to it); a ResNet takes any size, so the
    method's `image_size` is the only record of it.
    """
    bb, image_size = config.backbone_config, config.image_size
    if bb.model_type == "vit":
        if image_size is not None and image_size != bb.image_size:
            raise ValueError(
                f"image_size={image_size} but the ViT backbone is built for {bb.image_size}: set the backbone's "
                "image_size (--image_size sets both)."
            )
        check_patch_grid(bb.image_size, bb.patch_size)
    elif not is_resnet(bb):
        raise ValueError(
            f"{type(config).__name__} supports ResNet and ViT backbones, got model_type='{bb.model_type}'"
        )
    if image_size is not None and image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")


def resnet_or_vit_input_size(config: PreTrainedConfig) -> int:
    """Input side of a config checked by `check_resnet_or_vit`: the ViT's `image_size`, else `image_size` or 224."""
    if config.backbone_config.model_type == "vit":
        return config.backbone_config.image_size
    return config.image_size or 224


@strict
class SelfDistillationConfig(SSLViTConfig):
    """Fields of DINO-style self-distillation (DINO, SelfPatch).

    Heads, temperatures, centring, the EMA teacher and multi-crop.

    Args:
        backbone_config: A ViT (see `SSLViTConfig`; its `image_size` is the global-crop size) or a `ResNetConfig` /
            `SmallStemResNetConfig`.
        image_size: Side of the global crops with a ResNet (default 224). A ViT's is its own `image_size` (leave None
            or give the same value).
        out_dim: Prototypes `K` of the image head (DINO: 65536).
        head_hidden_dim: Head MLP width (2048).
        head_bottleneck_dim: Head width before the weight-normalised last layer (256).
        head_num_layers: Linear layers of the head before the last layer (3).
        use_bn_in_head: BatchNorm in the head MLP (DINO: False for ViTs).
        norm_last_layer: Freeze the weight-norm gain of the last layer at 1 (DINO's default).
        freeze_last_layer_fraction: Fraction of the run during which the last layer gets no gradient (DINO: the first
            epoch; 0.01 = 1 epoch of 100).
        student_temp: Student temperature tau_s.
        teacher_temp: Teacher temperature after the warm-up.
        warmup_teacher_temp: Teacher temperature at step 0.
        teacher_temp_warmup_fraction: Fraction of the run over which tau_t goes linearly from `warmup_teacher_temp` to
            `teacher_temp` (DINO's code default 0; its ViT-S recipe 30 of 300 epochs = 0.1).
        center_momentum: EMA momentum of the centre.
        ema_base: Teacher momentum at the start; it follows a cosine to 1 over the run.
        num_local_crops: Local crops per image (DINO: 8).
        local_crop_size: Side of the local crops in pixels (DINO: 96 for 224 global crops); a multiple of a ViT's patch
            size.
        global_crop_min_scale: Global crops cover (min_scale, 1) of the image area, local crops (local_crop_min_scale,
            global_crop_min_scale) (DINO: 0.4).
        local_crop_min_scale: Smallest area fraction of a local crop (DINO: 0.05).
    """

    out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_num_layers: int = 3
    use_bn_in_head: bool = False
    norm_last_layer: bool = True
    freeze_last_layer_fraction: float = 0.01
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup_fraction: float = 0.0
    center_momentum: float = 0.9
    ema_base: float = 0.996
    num_local_crops: int = 8
    local_crop_size: int = 96
    global_crop_min_scale: float = 0.4
    local_crop_min_scale: float = 0.05
    image_size: int | None = None

    def validate_backbone(self):
        if self.backbone_config.model_type == "vit":
            super().validate_backbone()
        check_resnet_or_vit(self)

    def validate_self_distillation(self):
        for name in ("out_dim", "head_hidden_dim", "head_bottleneck_dim", "head_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("freeze_last_layer_fraction", "teacher_temp_warmup_fraction", "center_momentum", "ema_base"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.num_local_crops < 0:
            raise ValueError(f"num_local_crops must be >= 0, got {self.num_local_crops}")
        if not 0 < self.local_crop_min_scale <= self.global_crop_min_scale <= 1:
            raise ValueError(
                "crop scales must satisfy 0 < local_crop_min_scale <= global_crop_min_scale <= 1, got "
                f"{self.local_crop_min_scale} and {self.global_crop_min_scale}"
            )
        patch = getattr(self.backbone_config, "patch_size", None)  # None for a ResNet (DINO), which pools any size
        if patch and self.num_local_crops and self.local_crop_size % patch:
            raise ValueError(
                f"local_crop_size={self.local_crop_size} is not a multiple of the patch size {patch}: local crops are "
                f"cut into patches too. Use e.g. {max(patch, self.local_crop_size // patch * patch)}."
            )

    @property
    def input_size(self) -> int:
        """Side of the global crops (the export's input size)."""
        return resnet_or_vit_input_size(self)
