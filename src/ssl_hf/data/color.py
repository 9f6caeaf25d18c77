"""SimCLR/BYOL colour augmentations, vectorised over a batch with per-sample parameters, and a K-view preset.

Every op works on float `(N, 3, H, W)` pixels in [0, 1] with one parameter per image and matches the torchvision
function named in its docstring (written from the definitions, torchvision is not a dependency). The random parameters
come from uniforms drawn from each sample's own `numpy.random.Generator` (see `ColorAugment.params`), so a sample's
views never depend on the rest of its batch.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .pixels import IMAGENET_MEAN, IMAGENET_STD, normalize, random_resized_box, resized_crops


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2


def _per_image(values: Tensor | float, ndim: int = 4) -> Tensor:
    """`(N,)` or a scalar -> `(N, 1, 1, 1)` or `(1, 1, 1, 1)` (for `ndim` 4), to broadcast one value per image."""
    return torch.as_tensor(values, dtype=torch.get_default_dtype()).reshape(-1, *(1,) * (ndim - 1))


def _blend(image: Tensor, other: Tensor, factor: Tensor | float) -> Tensor:
    """`factor * image + (1 - factor) * other` (as `torch.lerp`), clamped to [0, 1] (torchvision's `_blend`)."""
    return torch.lerp(other, image, _per_image(factor)).clamp_(0, 1)


def rgb_to_grayscale(pixels: Tensor) -> Tensor:
    """ITU-R 601-2 luma `0.299 R + 0.587 G + 0.114 B`, `(N, 1, H, W)` (`torchvision...functional.rgb_to_grayscale`)."""
    r, g, b = pixels.unbind(-3)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(-3)


def adjust_brightness(pixels: Tensor, factor: Tensor | float) -> Tensor:
    """Multiplies by `factor` and clamps (`torchvision.transforms.functional.adjust_brightness`)."""
    return (pixels * _per_image(factor)).clamp_(0, 1)


def adjust_contrast(pixels: Tensor, factor: Tensor | float) -> Tensor:
    """Blends with the mean of the grayscale image (`torchvision.transforms.functional.adjust_contrast`)."""
    return _blend(pixels, rgb_to_grayscale(pixels).mean((-3, -2, -1), keepdim=True), factor)


def adjust_saturation(pixels: Tensor, factor: Tensor | float) -> Tensor:
    """Blends with the grayscale image (`torchvision.transforms.functional.adjust_saturation`)."""
    return _blend(pixels, rgb_to_grayscale(pixels), factor)


def _hue(pixels: Tensor, value: Tensor, chroma: Tensor) -> Tensor:
    """HSV hue in turns [0, 1) of `(..., 3, H, W)` pixels, given their max channel and chroma (max - min).

    `((G - B) / C, (B - R) / C + 2, (R - G) / C + 4) / 6 mod 1` for a max channel R, G, B (ties resolved in that order,
    so grays get hue 0), as torchvision's `_rgb2hsv`. Written with masks: `torch.where` is slow on CPU.
    """
    r, g, b = pixels.unbind(-3)
    is_r = value == r
    is_g = (value == g) & ~is_r
    is_b = ~(is_r | is_g)
    hue = (g - b).mul_(is_r) + (b - r).add_(chroma, alpha=2).mul_(is_g) + (r - g).add_(chroma, alpha=4).mul_(is_b)
    hue = hue.div_(chroma.clamp(min=torch.finfo(chroma.dtype).tiny)).div_(6)  # gray: 0 / tiny = 0
    return hue.sub_(hue.floor())


def _from_hue(hue: Tensor, value: Tensor, chroma: Tensor) -> Tensor:
    """RGB from HSV written as hue in [0, 1], value and chroma `C = V S` (the inverse of `_hue`, as `_hsv2rgb`).

    Each channel is `V - C + C w`, with the fully saturated colour of the hue `w = clamp((|6 H - 3| - 1,
    2 - |6 H - 2|, 2 - |6 H - 4|), 0, 1)` (piecewise linear in the hue, periodic: hue 0 and 1 are both red).
    """
    shape = (3, 1, 1)
    offset, sign, bias = (torch.tensor(t, dtype=hue.dtype).view(shape) for t in ((3, 2, 4), (1, -1, -1), (-1, 2, 2)))
    w = (6 * hue.unsqueeze(-3) - offset).abs_().mul_(sign).add_(bias).clamp_(0, 1)
    return w.mul_(chroma.unsqueeze(-3)).add_((value - chroma).unsqueeze(-3))


def rgb_to_hsv(pixels: Tensor) -> Tensor:
    """RGB -> HSV, every channel in [0, 1] (`(..., 3, H, W)`, torchvision's `_rgb2hsv`); grays have hue 0."""
    value = pixels.amax(-3)
    chroma = value - pixels.amin(-3)
    saturation = chroma / value.clamp(min=torch.finfo(value.dtype).tiny)  # black: 0 / tiny = 0
    return torch.stack([_hue(pixels, value, chroma), saturation, value], -3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV -> RGB, the inverse of `rgb_to_hsv` (torchvision's `_hsv2rgb`)."""
    hue, saturation, value = hsv.unbind(-3)
    return _from_hue(hue, value, saturation * value)


def adjust_hue(pixels: Tensor, shift: Tensor | float) -> Tensor:
    """Adds `shift` (in turns, [-0.5, 0.5]) to the HSV hue, modulo 1 (`torchvision.transforms.functional.adjust_hue`).

    Saturation and value are unchanged, so the RGB result only needs the hue, the value and the chroma.
    """
    value = pixels.amax(-3)
    chroma = value - pixels.amin(-3)
    hue = _hue(pixels, value, chroma).add_(_per_image(shift, 3))
    return _from_hue(hue.sub_(hue.floor()), value, chroma).clamp_(0, 1)


def grayscale3(pixels: Tensor) -> Tensor:
    """Luma replicated to 3 channels (`torchvision.transforms.RandomGrayscale`'s op, `num_output_channels=3`)."""
    return rgb_to_grayscale(pixels).expand_as(pixels).contiguous()


def solarize(pixels: Tensor) -> Tensor:
    """`x -> 1 - x` where `x >= 0.5` (`torchvision.transforms.functional.solarize`, threshold 0.5, float images).

    Computed exactly as `x - max(2 x - 1, 0)` (no `torch.where`, which is slow on CPU).
    """
    return (pixels * 2).sub_(1).clamp_(min=0).neg_().add_(pixels)


def blur_kernel_size(side: int) -> int:
    """The odd kernel size closest to 10% of `side` (ties up), at least 3: 3 for 32 px, 9 for 96 px, 23 for 224 px."""
    return max(3, 2 * math.floor((0.1 * side - 1) / 2 + 0.5) + 1)


def gaussian_blur(pixels: Tensor, sigma: Tensor | float, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one `sigma` per image and reflect padding (`torchvision...gaussian_blur`).

    The kernel is `exp(-x^2 / (2 sigma^2))` at `x = -(k-1)/2, ..., (k-1)/2` (weights below 1e-12 zeroed: no effect in
    float32, but denormals are slow on CPU), normalised to sum 1. The whole batch is one grouped (depthwise)
    convolution, one group per image channel, first along rows then along columns.

    Args:
        pixels: `(N, C, H, W)`.
        sigma: `(N,)` standard deviations in pixels, or one for all.
        kernel_size: Odd kernel side, smaller than `H` and `W`.
    """
    n, c, h, w = pixels.shape
    x = torch.arange(kernel_size, dtype=pixels.dtype) - (kernel_size - 1) / 2
    kernel = torch.exp(-0.5 * (x / torch.as_tensor(sigma, dtype=pixels.dtype).reshape(-1, 1).expand(n, 1)) ** 2)
    kernel = kernel.masked_fill_(kernel < 1e-12, 0)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, k)
    pad = kernel_size // 2
    out = F.pad(pixels.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    out = F.conv2d(out, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    return out.view(n, c, h, w)


_IDENTITY = torch.tensor([1.0, 1.0, 1.0, 0.0])  # the factor of each jitter op that leaves an image unchanged


def _blend_ops(pixels: Tensor, op: Tensor, factor: Tensor) -> Tensor:
    """Brightness (`op` 0), contrast (1) or saturation (2) per image, in one batched blend.

    All three are `_blend(x, other, factor)` with `other` = 0, the mean of the grayscale image, or the grayscale image.
    """
    gray = rgb_to_grayscale(pixels)
    other = gray * _per_image(op == 2) + gray.mean((-3, -2, -1), keepdim=True) * _per_image(op == 1)
    return _blend(pixels, other, factor)


def _apply_rows(pixels: Tensor, rows: Tensor, fn: Callable[..., Tensor], *args: Tensor) -> Tensor:
    """`pixels[rows] = fn(pixels[rows], *(a[rows] for a in args))`, in place, skipping the copies when every row is on."""
    if rows.all():
        pixels.copy_(fn(pixels, *args))
    elif rows.any():
        pixels[rows] = fn(pixels[rows], *(a[rows] for a in args))
    return pixels


@dataclass
class ColorParams:
    """Per-image colour parameters of `N` views, all tensors with leading dimension `N`.

    Attributes:
        jitter: `(N,)` bool, apply the colour jitter.
        order: `(N, 4)` long, the jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue) in application order.
        factors: `(N, 4)` float, brightness, contrast and saturation factors and the hue shift.
        grayscale: `(N,)` bool, convert to grayscale.
        blur: `(N,)` bool, apply the Gaussian blur.
        sigma: `(N,)` float, the blur's standard deviation in pixels.
        solarize: `(N,)` bool, solarise.
        channels: `(N, 3)` long, the source channel of each output channel (identity `(0, 1, 2)` when not permuted).
    """

    jitter: Tensor
    order: Tensor
    factors: Tensor
    grayscale: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor
    channels: Tensor

    @staticmethod
    def interleave(per_view: Sequence["ColorParams"]) -> "ColorParams":
        """Merges `K` params of `B` images each into `B * K` params, sample-major (row `b * K + k`)."""
        return ColorParams(
            *(torch.stack([getattr(p, f.name) for p in per_view], 1).flatten(0, 1) for f in fields(ColorParams))
        )


def apply_color(pixels: Tensor, params: ColorParams) -> Tensor:
    """Applies jitter (ops in each image's order), grayscale, blur, solarisation, then the channel permutation.

    The first four as the BYOL pipeline; the channel permutation is off unless `channels` asks for it.

    The pixel math is batched: at each of the 4 jitter positions, one blend over the images whose op there is
    brightness, contrast or saturation and one hue shift over those whose op is hue; then grayscale, blur and
    solarisation each over the images that use them. Images skip the ops they do not use (exactly the identity).

    Args:
        pixels: `(N, 3, H, W)` in [0, 1].
        params: `N` images' parameters.

    Returns:
        `(N, 3, H, W)` in [0, 1], a new tensor.
    """
    out = pixels.clone()
    for position in range(4):
        op = params.order[:, position]
        factor = params.factors.gather(1, op[:, None]).squeeze(1)
        active = params.jitter & (factor != _IDENTITY[op])
        _apply_rows(out, active & (op < 3), _blend_ops, op, factor)
        _apply_rows(out, active & (op == 3), adjust_hue, factor)
    _apply_rows(out, params.grayscale, grayscale3)
    kernel_size = blur_kernel_size(min(out.shape[-2:]))
    _apply_rows(out, params.blur, lambda x, sigma: gaussian_blur(x, sigma, kernel_size).clamp_(0, 1), params.sigma)
    _apply_rows(out, params.solarize, solarize)
    permuted = (params.channels != torch.arange(3)).any(1)
    return _apply_rows(out, permuted, permute_channels, params.channels)


CHANNEL_PERMUTATIONS = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def permute_channels(pixels: Tensor, channels: Tensor) -> Tensor:
    """Output channel `c` of image `n` is its input channel `channels[n, c]` (a colour permutation per image)."""
    index = channels.to(pixels.device)[:, :, None, None].expand_as(pixels)
    return pixels.gather(1, index)


@dataclass(frozen=True)
class ColorAugment:
    """BYOL/SimCLR colour augmentation of one view, with per-image random parameters.

    Equivalent to torchvision's `RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p=jitter_prob)`,
    `RandomGrayscale(grayscale_prob)`, `RandomApply([GaussianBlur(k, blur_sigma)], p=blur_prob)` with `k =
    blur_kernel_size(side)`, then `RandomSolarize(0.5, p=solarize_prob)`. The jitter factors are uniform in
    `[1 - brightness, 1 + brightness]`, `[1 - contrast, 1 + contrast]`, `[1 - saturation, 1 + saturation]` and
    `[-hue, hue]`, and the four jitter ops run in a uniformly random order per image.

    Args:
        jitter_prob: Probability of the colour jitter.
        brightness: Brightness strength.
        contrast: Contrast strength.
        saturation: Saturation strength.
        hue: Hue strength, in [0, 0.5].
        grayscale_prob: Probability of grayscale.
        blur_prob: Probability of the Gaussian blur.
        blur_sigma: Range of the blur's sigma, in pixels.
        solarize_prob: Probability of solarisation.
        channel_permute_prob: Probability of permuting the RGB channels (a uniformly drawn one of the 6 orders, the
            identity included). Not in BYOL: for data whose colours identify an image (the built-in sets give every
            image its own background and digit colours) it removes colour as a way to match two views.
    """

    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.2
    channel_permute_prob: float = 0.0

    NUM_DRAWS: ClassVar[int] = 13  # uniforms per view

    def __post_init__(self):
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")

    def params(self, uniforms: np.ndarray, permute_uniforms: np.ndarray | None = None) -> ColorParams:
        """Turns `(N, NUM_DRAWS)` uniforms in [0, 1) into `N` views' parameters.

        Columns: 0 jitter gate; 1-4 brightness, contrast, saturation and hue factors; 5-8 sort keys of the jitter order
        (their argsort is a uniformly random permutation); 9 grayscale gate; 10 blur gate; 11 blur sigma; 12 solarise
        gate. A gate `u` is on when `u < probability`. `permute_uniforms`, `(N, 2)`, drive the channel permutation
        (gate, then which of the 6 orders); without them no image is permuted.
        """
        u = np.asarray(uniforms, dtype=np.float64).reshape(-1, self.NUM_DRAWS)
        channels = torch.arange(3).repeat(len(u), 1)
        if permute_uniforms is not None and self.channel_permute_prob > 0:
            v = np.asarray(permute_uniforms, dtype=np.float64).reshape(-1, 2)
            choice = torch.from_numpy(np.minimum((v[:, 1] * 6).astype(np.int64), 5))
            gate = torch.from_numpy(v[:, 0] < self.channel_permute_prob)
            channels = torch.where(gate[:, None], CHANNEL_PERMUTATIONS[choice], channels)
        low = np.array([1 - self.brightness, 1 - self.contrast, 1 - self.saturation, -self.hue])
        high = np.array([1 + self.brightness, 1 + self.contrast, 1 + self.saturation, self.hue])
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u[:, 11]
        return ColorParams(
            jitter=torch.from_numpy(u[:, 0] < self.jitter_prob),
            order=torch.from_numpy(np.argsort(u[:, 5:9], axis=1, kind="stable")),
            factors=torch.from_numpy(low + (high - low) * u[:, 1:5]).float(),
            grayscale=torch.from_numpy(u[:, 9] < self.grayscale_prob),
            blur=torch.from_numpy(u[:, 10] < self.blur_prob),
            sigma=torch.from_numpy(sigma).float(),
            solarize=torch.from_numpy(u[:, 12] < self.solarize_prob),
            channels=channels,
        )

    def __call__(self, pixels: Tensor, rngs: Sequence[np.random.Generator]) -> Tensor:
        """Augments `(N, 3, H, W)` pixels in [0, 1], drawing `NUM_DRAWS` uniforms from each image's rng."""
        u = np.stack([rng.random(self.NUM_DRAWS) for rng in rngs])
        v = np.stack([rng.random(2) for rng in rngs]) if self.channel_permute_prob > 0 else None
        return apply_color(pixels, self.params(u, v))


class MultiView:
    """`K` random-resized-crop + flip + colour views per image (SimCLR, BYOL, MSBReg).

    `blur_prob` and `solarize_prob` are cycled over the views (view `k` uses entry `k % len`): the defaults give every
    view blur 1.0 and solarisation 0.2 (MSBReg), `blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2)` is BYOL's pair.

    Draws, per sample from its rng: for each view, its crop box (`random_resized_box`) then one uniform for the flip
    (drawn even with `hflip=False`); then a `(K, ColorAugment.NUM_DRAWS)` array of uniforms for the colours (columns
    documented in `ColorAugment.params`). All `B * K` crops are one `resized_crops` call and the colour ops one batched
    `apply_color` call.

    Returns `{"pixel_values": (B, K, 3, S, S)}`, normalised.

    Args:
        image_size: Output side `S`.
        num_views: `K`, views per image.
        scale: Crop area range.
        ratio: Crop aspect-ratio range.
        hflip: Random horizontal flip with p = 0.5.
        blur_prob: Blur probability per view, cycled.
        solarize_prob: Solarisation probability per view, cycled.
        mean: Normalisation mean.
        std: Normalisation std.
        jitter_prob: Colour-jitter probability.
        brightness: Brightness strength.
        contrast: Contrast strength.
        saturation: Saturation strength.
        hue: Hue strength.
        grayscale_prob: Grayscale probability.
        blur_sigma: Range of the blur's sigma, in pixels.
        channel_permute_prob: Probability of a random RGB channel order per view (`ColorAugment`); when > 0, a
            `(K, 2)` array of uniforms is drawn after the colour uniforms.
    """

    def __init__(
        self,
        image_size: int,
        num_views: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        blur_prob: Sequence[float] = (1.0,),
        solarize_prob: Sequence[float] = (0.2,),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        grayscale_prob: float = 0.2,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        channel_permute_prob: float = 0.0,
    ):
        self.image_size, self.num_views = image_size, num_views
        self.channel_permute_prob = channel_permute_prob
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip
        self.mean, self.std = tuple(mean), tuple(std)
        common = dict(
            jitter_prob=jitter_prob,
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
            grayscale_prob=grayscale_prob,
            blur_sigma=tuple(blur_sigma),
            channel_permute_prob=channel_permute_prob,
        )
        self.augments = [
            ColorAugment(
                blur_prob=blur_prob[k % len(blur_prob)], solarize_prob=solarize_prob[k % len(solarize_prob)], **common
            )
            for k in range(num_views)
        ]

    def draw(
        self, images: Sequence[Tensor], rngs: Sequence[np.random.Generator]
    ) -> tuple[list[tuple[int, int, int, int]], list[bool], ColorParams]:
        """Draws the `B * K` boxes, flips and colour parameters (sample-major: view `k` of image `b` is `b * K + k`)."""
        K, boxes, flips, uniforms, permute = self.num_views, [], [], [], []
        for image, rng in zip(images, rngs):
            for _ in range(K):
                boxes.append(random_resized_box(rng, *image.shape[-2:], self.scale, self.ratio))
                flips.append(bool(rng.random() < 0.5) and self.hflip)
            uniforms.append(rng.random((K, ColorAugment.NUM_DRAWS)))
            if self.channel_permute_prob > 0:
                permute.append(rng.random((K, 2)))
        u = np.stack(uniforms)  # (B, K, NUM_DRAWS)
        v = np.stack(permute) if permute else None  # (B, K, 2)
        per_view = [aug.params(u[:, k], None if v is None else v[:, k]) for k, aug in enumerate(self.augments)]
        return boxes, flips, ColorParams.interleave(per_view)

    def __call__(self, images: Sequence[Tensor], rngs: Sequence[np.random.Generator]) -> dict[str, Tensor]:
        boxes, flips, params = self.draw(images, rngs)
        crops = resized_crops([im for im in images for _ in range(self.num_views)], boxes, flips, self.image_size)
        pixels = normalize(apply_color(crops, params), self.mean, self.std)
        return {"pixel_values": pixels.view(len(images), self.num_views, *pixels.shape[1:])}


class MultiCrop:
    """DINO's multi-crop: 2 global crops at `image_size` and `num_local` local crops at `local_size`, per image.

    Colour ops as DINO (and SelfPatch) by default: jitter 0.8, grayscale 0.2 on every crop; global crop 1 blur 1.0;
    global crop 2 blur 0.1 and solarisation 0.2; local crops blur 0.5 (`blur_prob` and `solarize_prob` change them).
    Each resolution is one `MultiView` pass (one batched crop call and one colour pass for all crops of that size), so
    the work per batch does not grow with Python loops over crops. Draws come from the sample's generator: first the global crops, then the local ones.

    Returns `{"pixel_values": (B, 2, 3, S, S), "local_pixel_values": (B, n, 3, s, s)}` (no local key when n = 0).

    Args:
        image_size: Side `S` of the global crops.
        local_size: Side `s` of the local crops.
        num_local: Local crops per image `n`.
        global_scale: Area range of the global crops (DINO (0.4, 1); SelfPatch's code (0.25, 1)).
        local_scale: Area range of the local crops (DINO (0.05, 0.4)).
        mean: Normalisation mean.
        std: Normalisation std.
        hflip: Random horizontal flip (p = 0.5) of every crop.
        blur_prob: Blur probability of global crop 1, global crop 2 and the local crops.
        solarize_prob: Solarisation probability of global crop 1, global crop 2 and the local crops.
        channel_permute_prob: Probability of a random RGB channel order per crop.
    """

    def __init__(
        self,
        image_size: int,
        local_size: int,
        num_local: int,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        hflip: bool = True,
        blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5),
        solarize_prob: tuple[float, float, float] = (0.0, 0.2, 0.0),
        channel_permute_prob: float = 0.0,
    ):
        if num_local < 0:
            raise ValueError(f"num_local must be >= 0, got {num_local}")
        common = dict(mean=mean, std=std, hflip=hflip, channel_permute_prob=channel_permute_prob)
        self.globals = MultiView(
            image_size, 2, global_scale, blur_prob=blur_prob[:2], solarize_prob=solarize_prob[:2], **common
        )
        self.locals = None
        if num_local:
            self.locals = MultiView(
                local_size, num_local, local_scale, blur_prob=blur_prob[2:], solarize_prob=solarize_prob[2:], **common
            )

    def __call__(self, images: Sequence[Tensor], rngs: Sequence[np.random.Generator]) -> dict[str, Tensor]:
        out = self.globals(images, rngs)
        if self.locals is not None:
            out["local_pixel_values"] = self.locals(images, rngs)["pixel_values"]
        return out
