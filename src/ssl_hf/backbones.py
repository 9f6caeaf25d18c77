"""Named backbone presets. Every preset is a stock transformers config (D1)."""

from difflib import get_close_matches
from typing import Any

from transformers import ViTConfig


# width / depth / heads; the MLP is 4x wide as in ViT and MAE.
VIT_PRESETS: dict[str, tuple[int, int, int]] = {
    "vit-tiny": (192, 12, 3),
    "vit-small": (384, 12, 6),
    "vit-base": (768, 12, 12),
    "vit-large": (1024, 24, 16),
}


def backbone_config(name: str, image_size: int = 224, patch_size: int = 16, **overrides: Any) -> ViTConfig:
    """Builds the config of a named backbone preset.

    MAE/DINO conventions replace two transformers defaults: LayerNorm eps 1e-6 (not 1e-12) and exact GELU.

    Args:
        name: One of `VIT_PRESETS` (`vit-tiny`, `vit-small`, `vit-base`, `vit-large`).
        image_size: Square input resolution in pixels.
        patch_size: Patch side in pixels; must divide `image_size`.
        **overrides: Any other `ViTConfig` field.
    """
    if name not in VIT_PRESETS:
        close = get_close_matches(name, VIT_PRESETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown backbone preset '{name}'.{hint} Available: {', '.join(VIT_PRESETS)}.")
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


def check_patch_grid(image_size: int, patch_size: int) -> None:
    """Raises a helpful error unless `patch_size` tiles `image_size` exactly."""
    if image_size % patch_size:
        divisors = [p for p in range(2, min(image_size, 33)) if image_size % p == 0]
        raise ValueError(
            f"patch_size={patch_size} does not divide image_size={image_size}: the patch grid must tile the image. "
            f"Use a patch size among {divisors} or change --image_size."
        )
