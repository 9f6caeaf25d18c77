"""Tests for image decoding and dataset loading (``ssl_hf.data.datasets``)."""

import io
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from ssl_hf.data.builtin import decode_pixels
from ssl_hf.data.datasets import ImageSource, decode_image, load_image_source, to_rgb
from ssl_hf.data.pipeline import SKIPPED, ViewsDataset
from ssl_hf.data.views import MaskedView


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 tensor -> (H, W, 3) numpy, after checking its type."""
    assert isinstance(tensor, torch.Tensor)
    assert tensor.dtype == torch.uint8
    assert tensor.dim() == 3
    assert tensor.shape[0] == 3
    return tensor.permute(1, 2, 0).numpy()


def _noise_png(seed: int = 0, size: int = 32) -> bytes:
    """An incompressible RGB PNG (random pixels), so that half of its bytes cut its pixel data."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels))


def _gray(values) -> Image.Image:
    return Image.fromarray(np.asarray(values, dtype=np.uint8), mode="L")


def _la() -> Image.Image:
    image = Image.new("LA", (3, 1))
    image.putdata([(100, 0), (100, 255), (0, 0)])
    return image


def _rgba() -> Image.Image:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(10, 20, 30, 0), (10, 20, 30, 255), (0, 0, 0, 0)])
    return image


def _palette() -> Image.Image:
    image = Image.new("P", (3, 2))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    image.putdata([0, 1, 2, 2, 1, 0])
    return image


def _palette_transparent() -> Image.Image:
    image = _palette()
    image.info["transparency"] = 2  # blue becomes transparent -> white
    return image


def _i16() -> Image.Image:
    image = Image.fromarray(np.array([[0, 65535], [32768, 257]], dtype=np.uint16))
    assert image.mode == "I;16"
    return image


def _cmyk() -> Image.Image:
    image = Image.new("CMYK", (2, 2))
    image.putdata([(0, 0, 0, 0), (0, 255, 255, 0), (255, 255, 0, 0), (0, 0, 0, 255)])
    return image


R, G, B, W, K = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)

# (name, image factory, lossless format, expected (H, W, 3) pixels)
CASES = [
    ("L", lambda: _gray([[0, 77], [200, 255]]), "PNG", [[(0,) * 3, (77,) * 3], [(200,) * 3, (255,) * 3]]),
    ("LA", _la, "PNG", [[W, (100,) * 3, W]]),
    ("RGBA", _rgba, "PNG", [[W, (10, 20, 30), W]]),
    ("P", _palette, "PNG", [[R, G, B], [B, G, R]]),
    ("P-transparent", _palette_transparent, "PNG", [[R, G, W], [W, G, R]]),
    ("I;16", _i16, "PNG", [[K, W], [(128,) * 3, (1,) * 3]]),
    ("CMYK", _cmyk, "TIFF", [[W, R], [B, K]]),
]


@pytest.mark.parametrize(("name", "factory", "fmt", "expected"), CASES, ids=[c[0] for c in CASES])
def test_to_rgb_modes(name, factory, fmt, expected):
    image = factory()
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.size == image.size
    np.testing.assert_array_equal(np.asarray(rgb), np.array(expected, dtype=np.uint8))


@pytest.mark.parametrize(("name", "factory", "fmt", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("kind", ["pil", "bytes", "dict", "path", "dict-path"])
def test_decode_image_inputs(tmp_path, name, factory, fmt, expected, kind):
    image = factory()
    data = _encode(image, fmt)
    assert Image.open(io.BytesIO(data)).mode == image.mode  # the encoded file keeps the mode under test
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(data)
    value = {
        "pil": image,
        "bytes": data,
        "dict": {"bytes": data, "path": None},
        "path": str(path),
        "dict-path": {"bytes": None, "path": str(path)},
    }[kind]
    np.testing.assert_array_equal(_hwc(decode_image(value)), np.array(expected, dtype=np.uint8))


def test_decode_image_non_square_layout():
    """Channels first, then rows (H), then columns (W)."""
    pixels = np.zeros((2, 5, 3), dtype=np.uint8)
    pixels[1, 4] = (1, 2, 3)
    out = decode_image(_encode(Image.fromarray(pixels)))
    assert out.shape == (3, 2, 5)
    assert out[:, 1, 4].tolist() == [1, 2, 3]
    assert out.is_contiguous()
    assert int(out.sum()) == 6


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_decode_image_jpeg(mode):
    colour = 90 if mode == "L" else (200, 60, 20)
    data = _encode(Image.new(mode, (16, 8), colour), "JPEG", quality=95)
    out = decode_image({"bytes": data, "path": None})
    assert out.shape == (3, 8, 16)
    expected = torch.tensor([colour] * 3 if mode == "L" else colour, dtype=torch.int16).view(3, 1, 1)
    assert (out.to(torch.int16) - expected).abs().max() <= 2  # JPEG is lossy on flat colours only by rounding


def test_decode_image_cmyk_jpeg():
    data = _encode(_cmyk(), "JPEG", quality=100)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.shape == (3, 2, 2)
    assert (out[:, 0, 0].int() - 255).abs().max() <= 8  # white
    assert out[:, 1, 1].int().max() <= 8  # black


def test_decode_image_i16_full_range():
    ramp = np.linspace(0, 65535, 16, dtype=np.uint16).reshape(2, 8)
    out = _hwc(decode_image(_encode(Image.fromarray(ramp))))
    expected = np.floor(ramp / 65535 * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "missing", "empty"])
@pytest.mark.parametrize("as_path", [True, False])
def test_decode_image_unreadable_returns_none(tmp_path, caplog, kind, as_path):
    png = _noise_png()
    data = {
        "corrupt": np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes(),
        "truncated": png[: len(png) // 2],
        "missing": None,
        "empty": b"",
    }[kind]
    path = tmp_path / f"{kind}.png"
    if data is not None:
        path.write_bytes(data)
    if kind == "missing" or as_path:
        value = str(path) if kind == "missing" and not as_path else {"bytes": None, "path": str(path)}
    else:
        value = {"bytes": data, "path": None}
    with caplog.at_level(logging.WARNING, logger="ssl_hf.data.datasets"):
        assert decode_image(value) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Skipping unreadable image" in warnings[0].getMessage()
    if as_path or kind == "missing":
        assert str(path) in warnings[0].getMessage()


def test_decode_image_valid_png_sanity():
    """The file truncated above decodes fine when whole (so None really comes from the truncation)."""
    png = _noise_png()
    expected = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_hwc(decode_image(png)), expected)


# --- local image folders -------------------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path):
    """`train/<class>/*.png`: 6 cats + 5 dogs (distinct sizes and colours) and one corrupt dog file."""
    root = tmp_path / "images"
    for k in range(12):
        cls = "cat" if k < 6 else "dog"
        folder = root / "train" / cls
        folder.mkdir(parents=True, exist_ok=True)
        if k == 9:
            (folder / "img_09_corrupt.png").write_bytes(b"\x89PNG not really" + bytes(range(256)))
        else:
            Image.new("RGB", (20 + k, 24), (10 * k, 255 - 10 * k, 7)).save(folder / f"img_{k:02d}.png")
    return root


def _paths(source: ImageSource) -> list[str]:
    return [v["path"] for v in source.dataset.with_format("arrow")[:].column(source.image_column).to_pylist()]


def test_load_image_folder(image_folder, tmp_path):
    source = load_image_source(str(image_folder), cache_dir=str(tmp_path / "cache"))
    assert source.image_column == "image"
    assert source.raw_size is None
    assert len(source.dataset) == 12
    assert source.dataset.features["image"] == datasets.Image(decode=False)
    assert isinstance(source.dataset.features["label"], datasets.ClassLabel)
    assert source.dataset.features["label"].names == ["cat", "dog"]
    row = source.dataset[0]["image"]
    assert isinstance(row, dict)  # not decoded by `datasets`
    assert set(row) == {"bytes", "path"}

    paths = _paths(source)
    corrupt = next(i for i, p in enumerate(paths) if "corrupt" in p)
    good = next(i for i, p in enumerate(paths) if p.endswith("img_03.png"))
    images, extra = source.read([good, corrupt], ["label"])
    assert images[1] is None
    assert images[0].shape == (3, 24, 23)
    assert images[0][:, 0, 0].tolist() == [30, 225, 7]
    assert extra["label"].tolist() == [0, 1]


def test_views_dataset_skips_corrupt_files(image_folder, tmp_path, caplog):
    source = load_image_source(str(image_folder), cache_dir=str(tmp_path / "cache"))
    paths = _paths(source)
    corrupt = next(i for i, p in enumerate(paths) if "corrupt" in p)
    others = [i for i in range(len(paths)) if i != corrupt][:3]
    ds = ViewsDataset(source, MaskedView(32, 16), seed=0)
    assert len(ds) == 12

    with caplog.at_level(logging.WARNING, logger="ssl_hf.data.datasets"):
        batch = ds.__getitems__([others[0], corrupt, others[1], others[2]])
    assert not caplog.records  # the batch names the file; the training loop warns once per file
    ((name, reason),) = batch[SKIPPED]
    assert name == paths[corrupt]
    assert "cannot identify image file" in reason
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["noise"].shape == (3, 16)
    assert ds.num_skipped == 1
    # the surviving samples keep their own views (seeded by their own index, not by their position)
    clean = ds.__getitems__(others)
    torch.testing.assert_close(batch["pixel_values"], clean["pixel_values"], rtol=0, atol=1e-6)
    assert torch.equal(batch["noise"], clean["noise"])
    assert ds.num_skipped == 1

    with pytest.raises(RuntimeError, match="failed to decode") as err:
        ds.__getitems__([corrupt, corrupt])
    assert str(corrupt) in str(err.value)
    assert paths[corrupt] in str(err.value)  # the first error
    assert "--image_column" in str(err.value)
    assert ds.num_skipped == 1  # files, not skip events


# --- parquet / arrow / save_to_disk ---------------------------------------------------------------------------


def _pil_images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (8 + k, 8), (k, 2 * k, 3 * k)) for k in range(n)]


def _image_dataset(n: int, column: str = "img") -> datasets.Dataset:
    features = datasets.Features({column: datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({column: _pil_images(n), "label": list(range(n))}, features=features)


def test_load_parquet_finds_image_column(tmp_path):
    path = tmp_path / "data.parquet"
    _image_dataset(5).to_parquet(str(path))
    source = load_image_source(str(path), cache_dir=str(tmp_path / "cache"))
    assert source.image_column == "img"
    assert len(source.dataset) == 5
    assert source.dataset.features["img"] == datasets.Image(decode=False)
    images, extra = source.read(slice(1, 4), ["label"])
    assert [tuple(im.shape) for im in images] == [(3, 8, 9), (3, 8, 10), (3, 8, 11)]
    assert [im[:, 0, 0].tolist() for im in images] == [[1, 2, 3], [2, 4, 6], [3, 6, 9]]
    assert extra["label"].tolist() == [1, 2, 3]


def test_load_several_parquet_files(tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    _image_dataset(3).to_parquet(str(first))
    _image_dataset(4).to_parquet(str(second))
    source = load_image_source(f"{first},{second}", cache_dir=str(tmp_path / "cache"))
    assert source.image_column == "img"
    assert len(source.dataset) == 7
    assert source.dataset["label"] == [0, 1, 2, 0, 1, 2, 3]


def test_load_parquet_explicit_and_unknown_image_column(tmp_path):
    path = tmp_path / "data.parquet"
    _image_dataset(2, column="photo").to_parquet(str(path))
    cache = str(tmp_path / "cache")
    assert load_image_source(str(path), image_column="photo", cache_dir=cache).image_column == "photo"
    assert load_image_source(str(path), cache_dir=cache).image_column == "photo"  # found by its Image type
    with pytest.raises(ValueError, match="--image_column") as err:
        load_image_source(str(path), image_column="nope", cache_dir=cache)
    message = str(err.value)
    assert "'nope'" in message
    assert "photo" in message
    assert "label" in message


def test_load_parquet_image_column_by_name(tmp_path):
    """A column of encoded bytes (no `Image` feature) is found by its conventional name."""
    path = tmp_path / "data.parquet"
    raw = [{"bytes": _encode(im), "path": None} for im in _pil_images(2)]
    datasets.Dataset.from_dict({"label": [0, 1], "image": raw}).to_parquet(str(path))
    source = load_image_source(str(path), cache_dir=str(tmp_path / "cache"))
    assert source.image_column == "image"
    images, _ = source.read([1])
    assert images[0].shape == (3, 8, 9)


def test_load_parquet_without_image_column(tmp_path):
    path = tmp_path / "data.parquet"
    datasets.Dataset.from_dict({"text": ["a", "b"], "score": [1, 2]}).to_parquet(str(path))
    with pytest.raises(ValueError, match="No image column") as err:
        load_image_source(str(path), cache_dir=str(tmp_path / "cache"))
    assert "text" in str(err.value)
    assert "score" in str(err.value)
    assert "--image_column" in str(err.value)


def test_load_empty_dataset(tmp_path):
    empty = _image_dataset(0)
    parquet = tmp_path / "rows.parquet"
    empty.to_parquet(str(parquet))
    with pytest.raises(ValueError, match="is empty"):
        load_image_source(str(parquet), cache_dir=str(tmp_path / "cache"))
    empty.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="is empty"):
        load_image_source(str(tmp_path / "saved"))


def test_load_saved_dataset(tmp_path):
    _image_dataset(4).save_to_disk(str(tmp_path / "saved"))
    source = load_image_source(str(tmp_path / "saved"))
    assert source.image_column == "img"
    assert len(source.dataset) == 4
    images, extra = source.read([3, 0], ["label"])
    assert [im[:, 0, 0].tolist() for im in images] == [[3, 6, 9], [0, 0, 0]]
    assert extra["label"].tolist() == [3, 0]


def test_load_saved_dataset_dict_split(tmp_path):
    dd = datasets.DatasetDict({"train": _image_dataset(4), "test": _image_dataset(2)})
    dd.save_to_disk(str(tmp_path / "saved"))
    assert len(load_image_source(str(tmp_path / "saved"), "train").dataset) == 4
    test = load_image_source(str(tmp_path / "saved"), "test")
    assert len(test.dataset) == 2
    assert test.image_column == "img"
    with pytest.raises(ValueError, match="validation") as err:
        load_image_source(str(tmp_path / "saved"), "validation")
    assert "its splits are: train, test" in str(err.value)


def test_load_missing_path_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="Could not load dataset"):
        load_image_source(str(tmp_path / "nothing.parquet"), cache_dir=str(tmp_path / "cache"))


# --- built-in sets -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_image_source("digits")


def test_builtin_source(digits):
    assert digits.raw_size == 32
    assert digits.image_column == "pixels"
    images, _ = digits.read([0])
    assert images[0].shape == (3, 32, 32)
    assert images[0].dtype == torch.uint8


def test_builtin_read_slice_matches_single_rows(digits):
    """Guards an Arrow offset bug: a slice of a sliced table must not return the first rows."""
    images, extra = digits.read(slice(8, 16), ["label"])
    assert len(images) == 8
    assert extra["label"].shape == (8,)
    first, _ = digits.read(slice(0, 8))
    assert not all(torch.equal(a, b) for a, b in zip(images, first))
    for k, i in enumerate(range(8, 16)):
        single, single_extra = digits.read([i], ["label"])
        assert torch.equal(images[k], single[0])
        assert extra["label"][k] == single_extra["label"][0]
        row = digits.dataset[i]
        expected = decode_pixels(np.asarray(row["pixels"]), 32)
        assert torch.equal(images[k], torch.from_numpy(expected).permute(2, 0, 1))
        assert extra["label"][k] == row["label"]
    listed, listed_extra = digits.read(list(range(8, 16)), ["label"])
    assert all(torch.equal(a, b) for a, b in zip(images, listed))
    assert np.array_equal(listed_extra["label"], extra["label"])


def test_builtin_read_after_select(digits):
    """Reads through Arrow respect a dataset that is itself a slice of a larger table."""
    sub = ImageSource(digits.dataset.select(range(100, 120)), digits.image_column, digits.raw_size)
    images, extra = sub.read(slice(2, 5), ["label"])
    expected, expected_extra = digits.read(slice(102, 105), ["label"])
    assert all(torch.equal(a, b) for a, b in zip(images, expected))
    assert np.array_equal(extra["label"], expected_extra["label"])


@pytest.fixture
def captioned(tmp_path):
    """A saved dataset with an image column, a caption, a label and a column of image paths."""
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        Path(paths[-1]).write_bytes(_noise_png(i))
    ds = datasets.Dataset.from_dict(
        {
            "photo": [{"bytes": _noise_png(i), "path": None} for i in range(4)],
            "caption": ["a photo of noise"] * 4,
            "label": [0, 1, 0, 1],
            "file": paths,
        },
        features=datasets.Features(
            photo=datasets.Image(),
            caption=datasets.Value("string"),
            label=datasets.Value("int64"),
            file=datasets.Value("string"),
        ),
    )
    ds.save_to_disk(str(tmp_path / "captioned"))
    return str(tmp_path / "captioned")


@pytest.mark.parametrize(
    ("column", "holds"),
    [("caption", "holds text (first value 'a photo of noise'), not images"), ("label", "holds int64 values")],
)
@pytest.mark.parametrize("streaming", [False, True])
def test_an_image_column_without_images_is_refused_before_training(captioned, column, holds, streaming):
    with pytest.raises(ValueError, match=f"Image column '{column}'") as err:
        load_image_source(captioned, image_column=column, streaming=streaming)
    assert holds in str(err.value)
    assert "Use --image_column photo." in str(err.value)


def test_a_column_of_image_paths_is_an_image_column(captioned):
    source = load_image_source(captioned, image_column="file")
    images, _ = source.read([0, 3])
    assert [tuple(im.shape) for im in images] == [(3, 32, 32)] * 2
