"""DINO configuration."""

from huggingface_hub.dataclasses import strict

from ...configuration_base import SelfDistillationConfig


@strict
class DINOConfig(SelfDistillationConfig):
    """Configuration of `DINOForPreTraining`.

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.

    The other fields are `SelfDistillationConfig`'s, with DINO's defaults (`facebookresearch/dino` `main_dino.py`):
    ViT-B/16 at 224, head 2048 -> 256 -> 65536 with a frozen weight-norm gain, student temperature 0.1, teacher 0.04,
    centre momentum 0.9, teacher momentum 0.996 -> 1, 2 global crops (0.4, 1) + 8 local 96-px crops (0.05, 0.4), last
    layer frozen for the first epoch (1 of 100).

    Args:
        backbone_config: A `ViTConfig` (the feature is the cls token after the final norm; default ViT-B/16 at 224)
            or, as `main_dino.py`'s torchvision archs (the paper's ResNet-50), a `ResNetConfig` or
            `SmallStemResNetConfig` (the feature is the average-pooled last stage); a dict with `model_type` or a config.
    """

    model_type = "ssl_dino"
