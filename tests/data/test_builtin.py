"""Tests for the built-in offline digits datasets (``ssl_hf.data.builtin``)."""

import datasets
import numpy as np
import pytest
import torch

from ssl_hf.data import builtin


N_SCENES = 64


def _np(ds):
    # NB: the numpy formatter upcasts integers to int64 unless a dtype is given.
    return ds.with_format("numpy", dtype=np.uint8)[:]


def _assert_pixels_column(ds, image_size):
    pixels_type = ds.data.schema.field("pixels").type
    assert pixels_type.list_size == image_size * image_size * 3
    assert str(pixels_type.value_type) == "uint8"


def test_source_split_disjoint_and_complete():
    train, test = builtin._source_split()
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.union1d(train, test), np.arange(1797))
    assert len(train) == 1438
    assert len(test) == 359
    again = builtin._source_split()
    assert np.array_equal(again[0], train)
    assert np.array_equal(again[1], test)


def test_digits_columns_and_labels(tmp_path):
    ds = builtin.load_builtin("digits", "train", cache_dir=tmp_path, renders_per_image=1)
    assert len(ds) == 1438
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == [str(i) for i in range(10)]
    assert builtin.builtin_image_size(ds) == 32
    _assert_pixels_column(ds, 32)
    rows = _np(ds)
    assert rows["pixels"].shape == (1438, 32 * 32 * 3)
    assert rows["pixels"].dtype == np.uint8
    assert set(rows["label"].tolist()) == set(range(10))
    images = builtin.decode_pixels(rows["pixels"][:4], 32)
    assert images.shape == (4, 32, 32, 3)
    assert images.dtype == np.uint8
    default = ds.with_format("numpy")[:4]["pixels"]  # int64 by default; decode casts back
    assert np.array_equal(builtin.decode_pixels(default, 32), images)
    assert builtin.decode_pixels(default[0], 32).shape == (32, 32, 3)
    assert images.std() > 10  # not blank


def test_digits_other_size_and_test_split(tmp_path):
    ds = builtin.load_builtin("digits", "test", image_size=16, cache_dir=tmp_path, renders_per_image=2)
    assert len(ds) == 2 * 359
    assert builtin.builtin_image_size(ds) == 16
    _assert_pixels_column(ds, 16)
    assert _np(ds)["pixels"].shape == (718, 16 * 16 * 3)


@pytest.mark.parametrize("name", builtin.BUILTIN_DATASETS)
def test_deterministic(tmp_path, name):
    kwargs = {"renders_per_image": 1, "num_scenes": N_SCENES}
    a = _np(builtin.load_builtin(name, cache_dir=tmp_path / "a", **kwargs))
    b = _np(builtin.load_builtin(name, cache_dir=tmp_path / "b", **kwargs))
    c = _np(builtin.load_builtin(name, seed=1, cache_dir=tmp_path / "a", **kwargs))
    assert np.array_equal(a["pixels"], b["pixels"])
    assert not np.array_equal(a["pixels"], c["pixels"])


def test_scenes_labels_and_segmentation(tmp_path):
    ds = builtin.load_builtin("digit-scenes", "train", cache_dir=tmp_path, num_scenes=N_SCENES)
    assert len(ds) == N_SCENES
    assert builtin.builtin_image_size(ds) == 32
    _assert_pixels_column(ds, 32)
    rows = _np(ds)
    assert rows["pixels"].shape == (N_SCENES, 32 * 32 * 3)
    assert rows["pixels"].dtype == np.uint8
    labels, seg = rows["labels"], rows["segmentation"]
    assert labels.shape == (N_SCENES, 10)
    assert set(np.unique(labels).tolist()) <= {0, 1}
    assert seg.shape == (N_SCENES, 32 * 32)
    assert seg.max() <= builtin.BACKGROUND_CLASS
    n_pos = labels.sum(axis=1)
    assert n_pos.min() >= 2
    assert n_pos.max() <= 5
    equal = 0
    for lab, s in zip(labels, seg, strict=True):
        labelled = set(np.nonzero(lab)[0].tolist())
        present = set(np.unique(s).tolist()) - {builtin.BACKGROUND_CLASS}
        assert present <= labelled
        equal += present == labelled
    assert equal >= 0.9 * N_SCENES


def test_patch_labels_majority_and_ties():
    seg = torch.tensor(
        [
            [
                [1, 1, 10, 10],
                [1, 2, 10, 3],
                [4, 5, 7, 7],
                [5, 4, 7, 7],
            ]
        ]
    )
    # patches (row-major): {1,1,1,2}->1, {10,10,10,3}->10, {4,5,5,4} tie->4, {7,7,7,7}->7
    expected = torch.tensor([[1, 10, 4, 7]])
    out = builtin.patch_labels(seg, 2)
    assert out.dtype == torch.long
    assert torch.equal(out, expected)
    assert torch.equal(builtin.patch_labels(seg.reshape(1, 16), 2), expected)
    assert torch.equal(builtin.patch_labels(seg, 4), torch.tensor([[7]]))  # 7 x4 beats 1 x3, 10 x3
    tie = torch.tensor([[[3, 3], [2, 2]]])
    assert torch.equal(builtin.patch_labels(tie, 2), torch.tensor([[2]]))  # 2-2 tie -> smallest id
    with pytest.raises(ValueError, match="divide"):
        builtin.patch_labels(seg, 3)


def test_patch_labels_matches_dataset_shape(tmp_path):
    rows = _np(builtin.load_builtin("digit-scenes", cache_dir=tmp_path, num_scenes=8))
    out = builtin.patch_labels(torch.from_numpy(rows["segmentation"]), 4)
    assert out.shape == (8, 64)
    assert out.max() <= builtin.BACKGROUND_CLASS


def test_cache_is_reused(tmp_path, monkeypatch):
    ds = builtin.load_builtin("digits", cache_dir=tmp_path, renders_per_image=1)
    target = next(tmp_path.glob("builtin/digits-*/train"))
    mtimes = {p: p.stat().st_mtime_ns for p in target.iterdir()}

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt instead of loading the cache")

    monkeypatch.setattr(builtin, "_render_digits", boom)
    again = builtin.load_builtin("digits", cache_dir=tmp_path, renders_per_image=1)
    assert {p: p.stat().st_mtime_ns for p in target.iterdir()} == mtimes
    assert np.array_equal(_np(ds)["pixels"], _np(again)["pixels"])


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_HF_CACHE", str(tmp_path))
    builtin.load_builtin("digit-scenes", "test", num_scenes=8)
    assert (tmp_path / "builtin" / "digit-scenes-s32-seed0-r5-n8-v1" / "test").is_dir()


def test_concurrent_build_falls_back_to_existing(tmp_path, monkeypatch):
    import shutil

    def racing_replace(src, dst):  # another process finished first
        shutil.copytree(src, dst)
        raise OSError("Directory not empty")

    monkeypatch.setattr(builtin.os, "replace", racing_replace)
    ds = builtin.load_builtin("digit-scenes", cache_dir=tmp_path, num_scenes=8)
    assert len(ds) == 8
    assert [p.name for p in (tmp_path / "builtin" / "digit-scenes-s32-seed0-r5-n8-v1").iterdir()] == ["train"]


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="digits"):
        builtin.load_builtin("mnist", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="train"):
        builtin.load_builtin("digits", "validation", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="16"):
        builtin.load_builtin("digits", image_size=8, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="last dim"):
        builtin.decode_pixels(np.zeros((2, 10), np.uint8), 32)


def test_helpers():
    assert builtin.is_builtin("digits")
    assert builtin.is_builtin("digit-scenes")
    assert not builtin.is_builtin("cifar10")
    assert builtin.builtin_image_size(datasets.Dataset.from_dict({"x": [1]})) is None
