"""View presets: how one dataset image becomes the model's forward kwargs.

Randomness comes from one `numpy.random.Generator` per sample, seeded from `(seed, epoch, sample index)`, so a run's
augmentations do not depend on batch size, process count, prefetching or where a run was resumed.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .color import MultiCrop, MultiView
from .pixels import IMAGENET_MEAN, IMAGENET_STD, normalize, random_resized_box, resized_crops


class MaskedView:
    """MAE-style view: one random-resized crop + horizontal flip, and per-sample masking noise.

    Returns `{"pixel_values": (B, 3, S, S), "noise": (B, L)}`; the noise drives the model's random masking.

    Args:
        image_size: Output side `S`.
        num_patches: `L`, patches per image.
        scale: Crop area range (MAE: (0.2, 1.0)).
        ratio: Crop aspect-ratio range.
        hflip: Random horizontal flip with p = 0.5.
        mean: Normalisation mean.
        std: Normalisation std.
    """

    def __init__(
        self,
        image_size: int,
        num_patches: int,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.image_size, self.num_patches = image_size, num_patches
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: Sequence[Tensor], rngs: Sequence[np.random.Generator]) -> dict[str, Tensor]:
        boxes = [random_resized_box(rng, *im.shape[-2:], self.scale, self.ratio) for im, rng in zip(images, rngs)]
        flips = [bool(rng.random() < 0.5) and self.hflip for rng in rngs]  # drawn even when off
        noise = torch.from_numpy(np.stack([rng.random(self.num_patches, dtype=np.float32) for rng in rngs]))
        pixels = resized_crops(images, boxes, flips, self.image_size)
        return {"pixel_values": normalize(pixels, self.mean, self.std), "noise": noise}


class EvalView:
    """Deterministic evaluation view: resize to `S` x `S` (bicubic, antialiased) and normalise.

    Matches the `ViTImageProcessor` written at export (resize to `(S, S)`, rescale 1/255, normalise).
    """

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)

    def __call__(self, images: Sequence[Tensor], rngs: Sequence[np.random.Generator] | None = None) -> dict:
        S = self.image_size
        batch = [
            F.interpolate(im[None].float(), size=(S, S), mode="bicubic", antialias=True).clamp_(0, 255).round_()
            if tuple(im.shape[-2:]) != (S, S)
            else im[None].float()
            for im in images
        ]
        return {"pixel_values": normalize(torch.cat(batch).div_(255), self.mean, self.std)}


def build_views(
    preset: str,
    model_config,
    scale: tuple[float, float] | None = None,
    hflip: bool | None = None,
    blur_prob: Sequence[float] | None = None,
    solarize_prob: Sequence[float] | None = None,
    channel_permute_prob: float | None = None,
):
    """Builds a method's training view preset from its config.

    Args:
        preset: Preset name declared by the method (`MethodSpec.views`).
        model_config: The method config (its `input_size`, or its `backbone_config` for the size and patch grid).
        scale: Override of the crop area range (multi-crop: of the global crops; the local crops then end at its
            lower bound).
        hflip: Random horizontal flip (p = 0.5); on when None.
        blur_prob: Blur probability per view, cycled over the views (multi-crop: global 1, global 2, local crops).
            None keeps the method's pair (BYOL 1.0 / 0.1, MSBReg 1.0, DINO 1.0 / 0.1 / 0.5).
        solarize_prob: Solarisation probability per view, as `blur_prob` (BYOL 0.0 / 0.2, MSBReg 0.2, DINO 0.0 / 0.2 /
            0.0).
        channel_permute_prob: Probability of a random RGB channel order per colour view (0 when None).
    """
    bb = model_config.backbone_config
    flip = True if hflip is None else bool(hflip)
    if preset == "mae":
        if any(blur_prob or ()) or any(solarize_prob or ()) or channel_permute_prob:
            raise ValueError(
                "blur_prob / solarize_prob / channel_permute_prob apply to colour views; MAE-style methods use crop + "
                "flip only (leave them unset or 0)."
            )
        num_patches = (bb.image_size // bb.patch_size) ** 2
        return MaskedView(bb.image_size, num_patches, scale=scale or (0.2, 1.0), hflip=flip)
    if preset in ("byol", "msbreg"):
        # BYOL's asymmetric pair (blur 1.0 / 0.1, solarise 0.0 / 0.2) or MSBReg's single set for every view (Tab. 1)
        asymmetric = model_config.augmentation == "byol"
        return MultiView(
            model_config.input_size,
            model_config.num_views,
            scale=scale or (0.08, 1.0),
            hflip=flip,
            blur_prob=blur_prob or ((1.0, 0.1) if asymmetric else (1.0,)),
            solarize_prob=solarize_prob or ((0.0, 0.2) if asymmetric else (0.2,)),
            channel_permute_prob=channel_permute_prob or 0.0,
        )
    if preset == "multicrop":
        # DINO / SelfPatch: 2 global crops (min_scale, 1) at the input size (a ViT's own; a ResNet's `image_size`) + n
        # local crops at their own size
        split = scale[0] if scale else model_config.global_crop_min_scale
        return MultiCrop(
            model_config.input_size,
            model_config.local_crop_size,
            model_config.num_local_crops,
            global_scale=(split, 1.0),
            local_scale=(min(model_config.local_crop_min_scale, split), split),
            hflip=flip,
            blur_prob=_three(blur_prob, (1.0, 0.1, 0.5)),
            solarize_prob=_three(solarize_prob, (0.0, 0.2, 0.0)),
            channel_permute_prob=channel_permute_prob or 0.0,
        )
    raise ValueError(f"Unknown views preset '{preset}'")


def _three(probs: Sequence[float] | None, default: tuple[float, float, float]) -> tuple[float, float, float]:
    """Per-view probabilities of multi-crop (global 1, global 2, local), cycling a shorter sequence."""
    if not probs:
        return default
    return tuple(float(probs[k % len(probs)]) for k in range(3))
