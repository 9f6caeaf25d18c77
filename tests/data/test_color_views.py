"""Tests for the colour augmentations and the K-view preset (``ssl_hf.data.color``)."""

import colorsys
import itertools

import numpy as np
import pytest
import torch

from ssl_hf.data.color import (
    ColorAugment,
    ColorParams,
    MultiView,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_color,
    blur_kernel_size,
    gaussian_blur,
    grayscale3,
    hsv_to_rgb,
    rgb_to_grayscale,
    rgb_to_hsv,
    solarize,
)
from ssl_hf.data.pipeline import sample_rngs
from ssl_hf.data.views import IMAGENET_MEAN, IMAGENET_STD, resized_crops


def _images(shapes, seed=0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in shapes]


def _pixels(n, size=8, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _unnormalized(pixels: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return pixels * std + mean


def _colors(*rgb) -> torch.Tensor:
    """One 2x2 image per RGB triple."""
    return torch.tensor(rgb, dtype=torch.float32).view(-1, 3, 1, 1).expand(-1, 3, 2, 2).contiguous()


PLAIN = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=(0.0,), solarize_prob=(0.0,))  # crops only


# --- MultiView ------------------------------------------------------------------------------------------------


def test_multiview_outputs():
    images = _images([(40, 48), (40, 48)])
    out = MultiView(32, 3)(images, sample_rngs(0, 0, range(2)))
    assert set(out) == {"pixel_values"}
    pixels = out["pixel_values"]
    assert pixels.shape == (2, 3, 3, 32, 32)
    assert pixels.dtype == torch.float32
    raw = _unnormalized(pixels)
    assert raw.min() >= -1e-5
    assert raw.max() <= 1 + 1e-5
    assert [img.dtype for img in images] == [torch.uint8] * 2  # inputs untouched
    assert torch.equal(images[0], _images([(40, 48)])[0])


def test_multiview_deterministic_and_ignores_global_rng():
    images = _images([(36, 36)] * 3)
    view = MultiView(32, 2)
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002 (the legacy global RNG must not matter)
    a = view(images, sample_rngs(0, 0, range(3)))["pixel_values"]
    torch.manual_seed(2)
    np.random.seed(2)  # noqa: NPY002 (the legacy global RNG must not matter)
    b = view(images, sample_rngs(0, 0, range(3)))["pixel_values"]
    assert torch.equal(a, b)
    assert not torch.equal(a, view(images, sample_rngs(0, 1, range(3)))["pixel_values"])  # next epoch
    assert not torch.equal(a, view(images, sample_rngs(1, 0, range(3)))["pixel_values"])  # other seed


@pytest.mark.parametrize("shapes", [[(36, 36)] * 4, [(40, 48), (64, 32), (32, 32), (40, 48), (33, 51)]])
def test_multiview_independent_of_batch(shapes):
    """A sample's views depend only on its own image and rng, also in a batch mixing image sizes."""
    images = _images(shapes)
    view = MultiView(32, 3)
    batch = view(images, sample_rngs(0, 0, range(len(images))))["pixel_values"]
    assert batch.shape == (len(images), 3, 3, 32, 32)
    for k, image in enumerate(images):
        alone = view([image], sample_rngs(0, 0, [k]))["pixel_values"]
        assert torch.equal(batch[k], alone[0])
    reordered = view(images[::-1], sample_rngs(0, 0, range(len(images)))[::-1])["pixel_values"]
    assert torch.equal(reordered, batch.flip(0))


def test_multiview_views_differ():
    out = MultiView(32, 4)(_images([(48, 48)]), sample_rngs(0, 0, [0]))["pixel_values"][0]
    for i, j in itertools.combinations(range(4), 2):
        assert (out[i] - out[j]).abs().max() > 0.1


def test_multiview_plain_full_crop_is_resize():
    """Without colour ops, a full-image crop without flip is the resized image."""
    images = _images([(40, 40)])
    view = MultiView(32, 2, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, **PLAIN)
    out = _unnormalized(view(images, sample_rngs(0, 0, [0]))["pixel_values"][0])
    expected = resized_crops(images, [(0, 0, 40, 40)], [False], 32)[0]
    assert torch.allclose(out, expected.expand(2, -1, -1, -1), atol=1e-5)


def test_multiview_cycles_blur_and_solarize():
    """View `k` uses entry `k % len` of `blur_prob` / `solarize_prob`; check the drawn flags and the pixels."""
    images = _images([(32, 32), (32, 32)])
    view = MultiView(
        32, 4, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, jitter_prob=0, grayscale_prob=0,
        blur_prob=(1.0, 0.0), solarize_prob=(0.0, 1.0),
    )  # fmt: skip
    _, _, params = view.draw(images, sample_rngs(0, 0, range(2)))
    assert params.blur.view(2, 4).tolist() == [[True, False, True, False]] * 2
    assert params.solarize.view(2, 4).tolist() == [[False, True, False, True]] * 2
    out = _unnormalized(view(images, sample_rngs(0, 0, range(2)))["pixel_values"])
    base = resized_crops(images, [(0, 0, 32, 32)] * 2, [False] * 2, 32)
    sigma = params.sigma.view(2, 4)
    for b in range(2):
        for k in (0, 2):
            assert torch.allclose(out[b, k], gaussian_blur(base[b : b + 1], sigma[b, k], 3)[0], atol=1e-5)
        for k in (1, 3):
            assert torch.allclose(out[b, k], solarize(base[b]), atol=1e-5)


def test_multiview_byol_asymmetric_probabilities():
    view = MultiView(32, 2, blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2))
    _, _, params = view.draw(_images([(32, 32)]) * 2000, sample_rngs(0, 0, range(2000)))
    blur, sol = params.blur.view(-1, 2).float().mean(0), params.solarize.view(-1, 2).float().mean(0)
    assert blur[0] == 1
    assert abs(blur[1] - 0.1) < 0.03
    assert sol[0] == 0
    assert abs(sol[1] - 0.2) < 0.03


# --- single ops on hand examples ------------------------------------------------------------------------------


def test_brightness():
    pixels = torch.full((3, 3, 2, 2), 0.5)
    out = adjust_brightness(pixels, torch.tensor([1.2, 0.6, 3.0]))
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0.6, 0.3, 1.0]))  # the last is clamped
    assert torch.equal(adjust_brightness(pixels, 1.0), pixels)


def test_grayscale_luma_and_zero_saturation():
    gray = rgb_to_grayscale(_colors((1, 0, 0), (0, 1, 0), (0, 0, 1), (0.2, 0.4, 0.6)))
    assert gray.shape == (4, 1, 2, 2)
    assert torch.allclose(
        gray[:, 0, 0, 0], torch.tensor([0.299, 0.587, 0.114, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6])
    )
    pixels = _pixels(4)
    gray3 = grayscale3(pixels)
    assert gray3.shape == pixels.shape
    assert torch.equal(gray3[:, 0], gray3[:, 1])
    assert torch.equal(gray3[:, 0], gray3[:, 2])
    assert torch.allclose(adjust_saturation(pixels, 0.0), gray3, atol=1e-6)
    assert torch.allclose(adjust_saturation(pixels, 1.0), pixels)


def test_contrast():
    pixels = _pixels(2)
    mean = rgb_to_grayscale(pixels).mean((1, 2, 3))
    flat = adjust_contrast(pixels, 0.0)
    assert torch.allclose(flat, mean.view(2, 1, 1, 1).expand_as(pixels), atol=1e-6)
    assert torch.allclose(adjust_contrast(pixels, 1.0), pixels)
    half = adjust_contrast(pixels, torch.tensor([0.5, 1.5]))
    expected = torch.stack([0.5 * pixels[0] + 0.5 * mean[0], 1.5 * pixels[1] - 0.5 * mean[1]]).clamp(0, 1)
    assert torch.allclose(half, expected, atol=1e-6)


def test_hue_shift():
    pixels = _pixels(8)
    assert torch.allclose(adjust_hue(pixels, 0.0), pixels, atol=1e-6)
    assert torch.allclose(adjust_hue(pixels, 0.5), adjust_hue(pixels, -0.5), atol=1e-5)
    assert torch.allclose(adjust_hue(adjust_hue(pixels, 0.5), 0.5), pixels, atol=1e-5)
    primaries = _colors((1, 0, 0), (0, 1, 0), (0, 0, 1))
    third = adjust_hue(primaries, 1 / 3)  # red -> green -> blue -> red
    assert torch.allclose(third, primaries.roll(-1, 0), atol=1e-6)
    assert torch.allclose(
        adjust_hue(primaries, torch.tensor([-1 / 3, 0.0, 1 / 3])), _colors((0, 0, 1), (0, 1, 0), (1, 0, 0)), atol=1e-6
    )
    grays = _colors((0.3, 0.3, 0.3), (0, 0, 0), (1, 1, 1))
    assert torch.equal(adjust_hue(grays, 0.25), grays)
    hsv = rgb_to_hsv(pixels)
    assert torch.allclose(rgb_to_hsv(adjust_hue(pixels, 0.1))[:, 1:], hsv[:, 1:], atol=1e-5)  # keeps S and V


def test_rgb_hsv_round_trip_and_colorsys():
    pixels = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pixels[0, :, 0, :3] = torch.tensor([[0.5, 0.5, 0.2], [0.5, 0.2, 0.5], [0.2, 0.5, 0.5]]).T  # ties at the max
    pixels[0, :, 1, :3] = torch.tensor([[0.0] * 3, [1.0] * 3, [0.4] * 3]).T  # grays
    hsv = rgb_to_hsv(pixels)
    assert hsv.min() >= 0
    assert hsv.max() <= 1
    assert torch.allclose(hsv_to_rgb(hsv), pixels, atol=1e-5)
    flat = pixels.permute(0, 2, 3, 1).reshape(-1, 3)[:600].double().tolist()
    expected = torch.tensor([colorsys.rgb_to_hsv(*rgb) for rgb in flat], dtype=torch.float64)
    got = hsv.permute(0, 2, 3, 1).reshape(-1, 3)[:600].double()
    hue_diff = (got[:, 0] - expected[:, 0]).abs()
    assert torch.minimum(hue_diff, 1 - hue_diff).max() < 1e-5  # hue is circular
    assert torch.allclose(got[:, 1:], expected[:, 1:], atol=1e-5)
    back = [colorsys.hsv_to_rgb(*h) for h in got.tolist()]  # colorsys inverts our HSV
    assert torch.allclose(torch.tensor(back, dtype=torch.float64), torch.tensor(flat, dtype=torch.float64), atol=1e-5)


def test_solarize():
    values = torch.tensor([0.0, 0.1, 0.25, 0.4999, 0.5, 0.75, 0.9, 1.0]).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    expected = torch.tensor([0.0, 0.1, 0.25, 0.4999, 0.5, 0.25, 0.9, 0.0])
    expected[-2] = 1 - expected[-2]
    assert torch.equal(solarize(values)[0, 1, 0], expected)
    pixels = _pixels(4)
    assert torch.equal(solarize(pixels), torch.where(pixels >= 0.5, 1 - pixels, pixels))  # exact


def test_blur():
    constant = torch.full((2, 3, 32, 32), 0.3)
    assert torch.allclose(gaussian_blur(constant, torch.tensor([0.5, 2.0]), 3), constant, atol=1e-6)
    image = torch.zeros(2, 3, 32, 32)
    image[:, :, 12:20, 14:18] = torch.rand(2, 3, 8, 4, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(image, torch.tensor([1.0, 2.0]), 7)
    assert torch.allclose(blurred.mean((2, 3)), image.mean((2, 3)), atol=1e-6)  # mass kept away from borders
    assert blurred[1].std() < blurred[0].std() < image[0].std()  # larger sigma, smoother
    dot = torch.zeros(1, 3, 9, 9)
    dot[..., 4, 4] = 1
    spread = gaussian_blur(dot, 1.0, 5)[0, 0]
    assert torch.allclose(spread, spread.flip(0))
    assert torch.allclose(spread, spread.T)
    weights = torch.exp(-0.5 * torch.arange(-2.0, 3.0) ** 2)
    assert torch.allclose(spread[4, 2:7], weights / weights.sum() * weights[2] / weights.sum(), atol=1e-7)
    assert torch.allclose(gaussian_blur(image, 0.1, 3), image, atol=1e-6)  # tiny sigma: the identity


@pytest.mark.parametrize(("side", "expected"), [(32, 3), (224, 23), (96, 9), (10, 3), (64, 7)])
def test_blur_kernel_size(side, expected):
    assert blur_kernel_size(side) == expected


# --- parameters and the batched pipeline ----------------------------------------------------------------------


def test_jitter_and_grayscale_probabilities():
    """Over 2000 images, ~80% are jittered and ~20% turned grayscale (measured on the pixels)."""
    n = 2000
    pixels = _pixels(n, size=4)
    jittered = ColorAugment(grayscale_prob=0, blur_prob=0, solarize_prob=0)(pixels, sample_rngs(0, 0, range(n)))
    changed = (jittered - pixels).flatten(1).abs().amax(1) > 1e-4
    assert abs(changed.float().mean() - 0.8) < 0.03
    gray = ColorAugment(jitter_prob=0, blur_prob=0, solarize_prob=0)(pixels, sample_rngs(0, 0, range(n)))
    is_gray = (gray[:, 0] == gray[:, 1]).flatten(1).all(1) & (gray[:, 1] == gray[:, 2]).flatten(1).all(1)
    assert abs(is_gray.float().mean() - 0.2) < 0.03
    assert torch.equal(gray[~is_gray], pixels[~is_gray])


def test_params_ranges_and_order():
    augment = ColorAugment(solarize_prob=0.5)
    params = augment.params(np.random.default_rng(0).random((4000, ColorAugment.NUM_DRAWS)))
    low, high = torch.tensor([0.6, 0.6, 0.8, -0.1]), torch.tensor([1.4, 1.4, 1.2, 0.1])
    assert (params.factors >= low).all()
    assert (params.factors <= high).all()
    assert ((params.sigma >= 0.1) & (params.sigma <= 2.0)).all()
    assert params.blur.all()
    assert abs(params.solarize.float().mean() - 0.5) < 0.03
    assert torch.equal(params.order.sort(1).values, torch.arange(4).expand(4000, 4))  # permutations
    perms = {tuple(row) for row in params.order.tolist()}
    assert len(perms) == 24
    for position in range(4):  # each op ~1/4 of the time at each position
        counts = torch.bincount(params.order[:, position], minlength=4).float() / 4000
        assert (counts - 0.25).abs().max() < 0.04
    with pytest.raises(ValueError, match="hue"):
        ColorAugment(hue=0.6)


def test_apply_color_matches_sequential_ops():
    """The batched pipeline equals applying the single ops image by image in each image's order."""
    n = 64
    pixels = _pixels(n, size=16, seed=1)
    params = ColorAugment(solarize_prob=0.5, blur_prob=0.5).params(np.random.default_rng(3).random((n, 13)))
    out = apply_color(pixels, params)
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for i in range(n):
        x = pixels[i : i + 1]
        if params.jitter[i]:
            for op in params.order[i].tolist():
                x = ops[op](x, params.factors[i, op])
        if params.grayscale[i]:
            x = grayscale3(x)
        if params.blur[i]:
            x = gaussian_blur(x, params.sigma[i], blur_kernel_size(16)).clamp(0, 1)
        if params.solarize[i]:
            x = solarize(x)
        assert torch.allclose(out[i], x[0], atol=1e-6), i
    assert torch.equal(pixels, _pixels(n, size=16, seed=1))  # input untouched


def test_color_params_interleave():
    augment = ColorAugment()
    u = np.random.default_rng(0).random((3, 2, ColorAugment.NUM_DRAWS))
    merged = ColorParams.interleave([augment.params(u[:, 0]), augment.params(u[:, 1])])
    flat = augment.params(u.reshape(6, -1))
    for name in ("jitter", "order", "factors", "grayscale", "blur", "sigma", "solarize"):
        assert torch.equal(getattr(merged, name), getattr(flat, name))


# ------------------------------------------------------------------------------------------ DINO multi-crop


def _rngs(n, seed=0):
    return [np.random.default_rng((seed, i)) for i in range(n)]


def test_multicrop_shapes_and_determinism():
    from ssl_hf.data.color import MultiCrop

    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(3)]
    crops = MultiCrop(32, 16, 6)
    out = crops(images, _rngs(3))
    assert out["pixel_values"].shape == (3, 2, 3, 32, 32)
    assert out["local_pixel_values"].shape == (3, 6, 3, 16, 16)
    again = crops(images, _rngs(3))
    assert all(torch.equal(out[k], again[k]) for k in out)
    alone = crops(images[1:2], _rngs(3)[1:2])  # a sample's crops do not depend on its batch
    assert torch.equal(alone["local_pixel_values"][0], out["local_pixel_values"][1])
    assert "local_pixel_values" not in MultiCrop(32, 16, 0)(images, _rngs(3))


def test_multicrop_scales_and_dino_colour_schedule():
    from ssl_hf.data.color import MultiCrop

    crops = MultiCrop(32, 16, 4, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4))
    images = [torch.zeros(3, 64, 64, dtype=torch.uint8)] * 400
    rngs = _rngs(400, seed=3)
    g_boxes, _, g_params = crops.globals.draw(images, rngs)
    l_boxes, _, l_params = crops.locals.draw(images, rngs)  # drawn after the globals, as in __call__
    g_area = np.array([h * w for _, _, h, w in g_boxes]) / 64**2
    l_area = np.array([h * w for _, _, h, w in l_boxes]) / 64**2
    assert g_area.min() >= 0.35
    assert l_area.max() <= 0.45
    blur, solarize = g_params.blur.view(400, 2).float().mean(0), g_params.solarize.view(400, 2).float().mean(0)
    assert blur[0] == 1.0
    assert abs(blur[1] - 0.1) < 0.05
    assert solarize[0] == 0.0
    assert abs(solarize[1] - 0.2) < 0.06
    assert abs(l_params.blur.float().mean() - 0.5) < 0.05
    assert not l_params.solarize.any()
