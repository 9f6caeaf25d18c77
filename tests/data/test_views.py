"""Tests for the view presets (``ssl_hf.data.views``) and the views dataset (``ssl_hf.data.pipeline``)."""

import math

import numpy as np
import pytest
import torch

from ssl_hf.data.datasets import load_image_source
from ssl_hf.data.pipeline import ViewsDataset, sample_rngs
from ssl_hf.data.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalView,
    MaskedView,
    build_views,
    random_resized_box,
    resized_crops,
)


def _images(shapes, seed=0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in shapes]


def _normalized(pixels: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


# --- random_resized_box ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80), (100, 30)])
@pytest.mark.parametrize("scale", [(0.08, 0.5), (0.2, 1.0), (0.5, 0.9)])
def test_random_resized_box_inside_and_area(height, width, scale):
    ratio = (3 / 4, 4 / 3)
    area = height * width
    for seed in range(200):
        top, left, h, w = random_resized_box(np.random.default_rng(seed), height, width, scale, ratio)
        assert all(isinstance(v, int) for v in (top, left, h, w))
        assert 0 < h <= height
        assert 0 < w <= width
        assert 0 <= top <= height - h
        assert 0 <= left <= width - w
        fallback = (top, left, h, w) == ((height - h) // 2, (width - w) // 2, h, w) and (h == height or w == width)
        if not fallback:
            # h, w are rounded from sqrt(target * aspect), sqrt(target / aspect): the target lies within these bounds
            assert (h - 0.5) * (w - 0.5) <= scale[1] * area + 1e-9
            assert (h + 0.5) * (w + 0.5) >= scale[0] * area - 1e-9
            # w = round(aspect * y), y = h +- 0.5, aspect within `ratio`
            assert ratio[0] * (h - 0.5) - 0.5 <= w <= ratio[1] * (h + 0.5) + 0.5


def test_random_resized_box_small_scale_never_falls_back():
    """With at most half of a square image, every trial fits, so the area fraction is always within `scale`."""
    fractions = []
    for seed in range(300):
        top, left, h, w = random_resized_box(np.random.default_rng(seed), 64, 64, (0.1, 0.5), (3 / 4, 4 / 3))
        fractions.append(h * w / 64**2)
    assert max(fractions) < 0.56  # a fallback would be the whole image (1.0)
    assert min(fractions) > 0.08
    assert np.std(fractions) > 0.05  # actually random


def test_random_resized_box_deterministic():
    boxes = [random_resized_box(np.random.default_rng(7), 50, 70, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(2)]
    assert boxes[0] == boxes[1]
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    seq_a = [random_resized_box(rng_a, 50, 70, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(10)]
    seq_b = [random_resized_box(rng_b, 50, 70, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(10)]
    assert seq_a == seq_b
    assert len(set(seq_a)) > 1  # successive draws differ
    other = random_resized_box(np.random.default_rng(8), 50, 70, (0.2, 1.0), (3 / 4, 4 / 3))
    assert other != boxes[0]


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (10, 40, (0, 13, 10, 13)),  # too wide: full height, widest allowed aspect, centred
        (40, 10, (13, 0, 13, 10)),  # too tall
        (30, 30, (0, 0, 30, 30)),  # aspect allowed: the whole image
    ],
)
def test_random_resized_box_fallback_is_central(height, width, expected):
    """A target area larger than the image fails all 10 trials: central crop at the closest allowed aspect."""
    box = random_resized_box(np.random.default_rng(0), height, width, (2.0, 3.0), (3 / 4, 4 / 3))
    assert box == expected


# --- resized_crops -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
def test_resized_crops_full_box_batched(flip):
    images = _images([(16, 16)] * 3)
    out = resized_crops(images, [(0, 0, 16, 16)] * 3, [flip] * 3, 16)
    assert out.shape == (3, 3, 16, 16)
    assert out.dtype == torch.float32
    expected = torch.stack(images).float() / 255
    if flip:
        expected = expected.flip(-1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("flip", [False, True])
def test_resized_crops_full_box_per_image(flip):
    images = _images([(16, 16), (40, 40), (16, 16)])  # mixed sizes
    boxes = [(0, 0, 16, 16), (5, 9, 16, 16), (0, 0, 16, 16)]
    out = resized_crops(images, boxes, [flip, flip, not flip], 16)
    assert out.shape == (3, 3, 16, 16)
    expected = [images[0] / 255, images[1][:, 5:21, 9:25] / 255, images[2] / 255]
    expected = [e.flip(-1) if f else e for e, f in zip(expected, [flip, flip, not flip])]
    torch.testing.assert_close(out, torch.stack(expected).float(), rtol=0, atol=1e-5)


def test_resized_crops_offset_box_batched():
    """A box of the output size inside a larger image samples exactly its pixels (batched path)."""
    images = _images([(24, 24)] * 2)
    boxes = [(4, 6, 16, 16), (8, 0, 16, 16)]
    out = resized_crops(images, boxes, [False, True], 16)
    expected = torch.stack([images[0][:, 4:20, 6:22], images[1][:, 8:24, 0:16].flip(-1)]).float() / 255
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("shapes", "size"),
    [
        ([(32, 32)] * 2, 16),  # same shapes, box side == output side
        ([(32, 32), (20, 70)], 16),  # two shape groups
        ([(20, 70), (100, 90)], 32),  # up- and downsampling
        ([(32, 32)], 32),  # upsampling 2x horizontally: nothing outside the box leaks in
    ],
)
@pytest.mark.parametrize("flip", [False, True])
def test_resized_crops_left_half(shapes, size, flip):
    """Left half black, right half white: a crop of the left half is all black (nothing leaks from the box)."""
    images = []
    for h, w in shapes:
        image = torch.zeros(3, h, w, dtype=torch.uint8)
        image[..., w // 2 :] = 255
        images.append(image)
    boxes = [(0, 0, h, w // 2) for h, w in shapes]
    out = resized_crops(images, boxes, [flip] * len(images), size)
    assert out.shape == (len(images), 3, size, size)
    assert out.abs().max() < 1e-5
    # and the right half is all white
    boxes = [(0, w - w // 2, h, w // 2) for h, w in shapes]
    out = resized_crops(images, boxes, [flip] * len(images), size)
    assert (out - 1).abs().max() < 1e-5


def test_resized_crops_range_and_resize():
    images = _images([(40, 40)] * 2 + [(200, 150)])
    out = resized_crops(images[:2], [(3, 5, 30, 20)] * 2, [False, True], 32)
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= 0
    assert out.max() <= 1
    out = resized_crops(images, [(0, 0, 40, 40), (0, 0, 40, 40), (10, 10, 120, 100)], [False] * 3, 32)
    assert out.shape == (3, 3, 32, 32)
    assert out.min() >= 0
    assert out.max() <= 1


# --- MaskedView --------------------------------------------------------------------------------------------


def test_masked_view_outputs():
    view = MaskedView(32, 16)
    images = _images([(40, 40)] * 3)
    out = view(images, sample_rngs(0, 0, [0, 1, 2]))
    assert set(out) == {"pixel_values", "noise"}
    assert out["pixel_values"].shape == (3, 3, 32, 32)
    assert out["pixel_values"].dtype == torch.float32
    assert out["noise"].shape == (3, 16)
    assert out["noise"].dtype == torch.float32
    assert out["noise"].min() >= 0
    assert out["noise"].max() < 1
    assert not torch.equal(out["noise"][0], out["noise"][1])
    # normalised pixels: inverting the normalisation gives values in [0, 1]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    raw = out["pixel_values"] * std + mean
    assert raw.min() >= -1e-5
    assert raw.max() <= 1 + 1e-5


def test_masked_view_no_flip_full_scale_is_identity():
    """scale (1, 1) and ratio (1, 1) on a square image of the output size: the view is the normalised image."""
    view = MaskedView(16, 4, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    images = _images([(16, 16)] * 2)
    out = view(images, sample_rngs(0, 0, [0, 1]))
    expected = _normalized(torch.stack(images).float() / 255)
    torch.testing.assert_close(out["pixel_values"], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "shapes",
    [
        [(32, 32)] * 4,  # batched path
        [(40, 40), (48, 64), (200, 160), (32, 32)],  # mixed sizes
        [(40, 40), (40, 40), (48, 64), (40, 40)],
    ],
    ids=["same-size", "mixed", "mostly-same"],
)
def test_masked_view_independent_of_batch(shapes):
    """A sample's view depends on its image and (seed, epoch, index) only, never on the rest of its batch."""
    view = MaskedView(32, 16)
    images = _images(shapes)
    indices = [11, 5, 42, 7]
    batch = view(images, sample_rngs(3, 2, indices))
    for k, index in enumerate(indices):
        alone = view([images[k]], sample_rngs(3, 2, [index]))
        torch.testing.assert_close(batch["pixel_values"][k], alone["pixel_values"][0], rtol=0, atol=1e-6)
        assert torch.equal(batch["noise"][k], alone["noise"][0])


def test_masked_view_changes_with_epoch_and_index():
    view = MaskedView(32, 16)
    images = _images([(48, 48)] * 2)
    epoch0 = view(images, sample_rngs(0, 0, [0, 1]))
    again = view(images, sample_rngs(0, 0, [0, 1]))
    epoch1 = view(images, sample_rngs(0, 1, [0, 1]))
    assert torch.equal(epoch0["pixel_values"], again["pixel_values"])
    assert torch.equal(epoch0["noise"], again["noise"])
    for k in range(2):
        assert not torch.allclose(epoch0["pixel_values"][k], epoch1["pixel_values"][k])
        assert not torch.equal(epoch0["noise"][k], epoch1["noise"][k])
    other_seed = view(images, sample_rngs(1, 0, [0, 1]))
    assert not torch.equal(epoch0["noise"], other_seed["noise"])


def test_sample_rngs_pure():
    first = [rng.random() for rng in sample_rngs(0, 1, [2, 3])]
    assert first == [rng.random() for rng in sample_rngs(0, 1, np.array([2, 3]))]
    assert first[0] == sample_rngs(0, 1, [2])[0].random()
    assert first[0] != first[1]
    assert first[0] != sample_rngs(0, 2, [2])[0].random()


def test_build_views(tiny_config):
    view = build_views("mae", tiny_config)
    assert isinstance(view, MaskedView)
    assert view.image_size == 32
    assert view.num_patches == 16
    assert view.scale == (0.2, 1.0)
    assert build_views("mae", tiny_config, scale=(0.5, 1.0)).scale == (0.5, 1.0)
    with pytest.raises(ValueError, match="Unknown views preset"):
        build_views("nope", tiny_config)


# --- ViewsDataset over the built-in digits -----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_image_source("digits")


def test_views_dataset_batch_equals_items(digits):
    ds = ViewsDataset(digits, MaskedView(32, 16), seed=0)
    assert len(ds) == len(digits.dataset)
    batch = ds.__getitems__([3, 7])
    items = [ds[3], ds[7]]
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert items[0]["pixel_values"].shape == (3, 32, 32)
    assert items[0]["noise"].shape == (16,)
    for key in ("pixel_values", "noise"):
        torch.testing.assert_close(batch[key], torch.stack([it[key] for it in items]), rtol=0, atol=1e-6)
    assert not torch.allclose(batch["pixel_values"][0], batch["pixel_values"][1])
    assert ds.num_skipped == 0

    ds.set_epoch(1)
    later = ds.__getitems__([3, 7])
    for k in range(2):
        assert not torch.allclose(later["pixel_values"][k], batch["pixel_values"][k])
        assert not torch.equal(later["noise"][k], batch["noise"][k])
    ds.set_epoch(0)
    torch.testing.assert_close(ds.__getitems__([3, 7])["pixel_values"], batch["pixel_values"], rtol=0, atol=0)


def test_views_dataset_seed(digits):
    a = ViewsDataset(digits, MaskedView(32, 16), seed=0).__getitems__([3])
    b = ViewsDataset(digits, MaskedView(32, 16), seed=1).__getitems__([3])
    assert not torch.equal(a["noise"], b["noise"])


# --- EvalView ----------------------------------------------------------------------------------------------


def test_eval_view_same_size_is_exact():
    images = _images([(32, 32)] * 3)
    out = EvalView(32)(images)
    assert set(out) == {"pixel_values"}
    expected = _normalized(torch.stack(images).float() / 255)
    assert torch.equal(out["pixel_values"], expected)


def test_eval_view_resizes():
    images = _images([(48, 48), (32, 32), (20, 60)])
    out = EvalView(32)(images)["pixel_values"]
    assert out.shape == (3, 3, 32, 32)
    assert torch.equal(out[1], _normalized(images[1][None].float() / 255)[0])
    single = EvalView(32)([images[0]])["pixel_values"]
    assert single.shape == (1, 3, 32, 32)
    assert torch.equal(single[0], out[0])  # independent of the batch


def test_eval_view_resize_keeps_flat_colours():
    colour = torch.tensor([12, 130, 250], dtype=torch.uint8).view(3, 1, 1)
    image = colour.expand(3, 48, 48).contiguous()
    out = EvalView(32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))([image])["pixel_values"]
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out[0], (colour.float() / 255).expand(3, 32, 32), rtol=0, atol=1e-6)


def test_eval_view_custom_normalisation():
    images = _images([(32, 32)])
    out = EvalView(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(images)["pixel_values"]
    torch.testing.assert_close(out[0], images[0].float() / 255 * 2 - 1, rtol=0, atol=1e-6)
    assert math.isclose(float(out.min()), float(images[0].min()) / 255 * 2 - 1, abs_tol=1e-6)


@pytest.mark.parametrize("shapes", [[(32, 32)] * 3, [(40, 24), (90, 120), (32, 32)]])
def test_resized_crops_equal_crop_then_interpolate(shapes):
    """The batched matrix form equals cropping each image and resizing it with F.interpolate (bicubic, antialias)."""
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in shapes]
    boxes = [random_resized_box(rng, h, w, (0.1, 1.0), (3 / 4, 4 / 3)) for h, w in shapes]
    flips = [False, True, False]
    out = resized_crops(images, boxes, flips, 32)
    for image, (top, left, h, w), flip, got in zip(images, boxes, flips, out):
        crop = image[None, :, top : top + h, left : left + w].float() / 255
        ref = torch.nn.functional.interpolate(crop, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)[0]
        torch.testing.assert_close(got, ref.flip(-1) if flip else ref, atol=1e-5, rtol=0)
