"""Datasets without a test split (`--test_fraction` hold-out) and text class labels."""

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
from conftest import write_square_folders
from transformers import ViTConfig, ViTModel

from ssl_hf.cli import main
from ssl_hf.evaluation import evaluate_backbone
from ssl_hf.evaluation.splits import labelled_splits


@pytest.fixture
def export(tmp_path):
    torch.manual_seed(0)
    root = tmp_path / "vit"
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24, image_size=32)
    ViTModel(config, add_pooling_layer=False).save_pretrained(root)
    (root / "preprocessor_config.json").write_text('{"size": {"height": 32, "width": 32}}')
    return root


@pytest.fixture
def train_only(tmp_path, monkeypatch):
    """An imagefolder with 8 near-black and 8 near-white images under train/ and no test/ folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    root = write_square_folders(tmp_path / "squares", {"black": 12, "white": 243}, 8, 12)
    shutil.rmtree(root / "test")
    return str(root)


def test_a_missing_test_split_offers_the_hold_out(export, train_only):
    with pytest.raises(ValueError, match="has no split 'test'; its splits are: train") as err:
        evaluate_backbone(str(export), train_only, cache=False)
    assert "--test_fraction 0.2" in str(err.value)
    assert "--test_split" in str(err.value)


def test_the_hold_out_is_seeded_and_disjoint(train_only):
    def split(seed):
        train, test = labelled_splits(train_only, "train", "test", "label", None, 0.25, seed)
        return [[v["path"] for v in s.dataset["image"]] for s in (train, test)]

    (train, test), (again, test_again), (_, other) = split(0), split(0), split(1)
    assert (len(train), len(test)) == (12, 4)
    assert not set(train) & set(test)
    assert (train, test) == (again, test_again)
    assert test != other


def test_cli_evaluates_on_the_hold_out(export, train_only, tmp_path, capsys):
    out = tmp_path / "knn.json"
    argv = ["evaluate", str(export), "--dataset", train_only, "--test_fraction", "0.25", "--k", "3", "--no_cache"]
    main([*argv, "--output", str(out)])
    (row,) = json.loads(out.read_text())["results"]
    assert (row["num_train"], row["num_test"], row["split"]) == (12, 4, "0.25 of train (seed 0)")
    assert row["top1"] == 1.0
    assert "on " + train_only in capsys.readouterr().out


def test_text_labels_are_encoded_with_one_mapping_for_both_splits(export, tmp_path):
    """The test split lacks 'cat': class ids come from the names of both splits, not from each split alone."""
    rng = np.random.default_rng(0)

    def images(level, n):
        return [np.clip(level + rng.integers(-12, 13, (32, 32, 3)), 0, 255).astype(np.uint8) for _ in range(n)]

    features = datasets.Features(image=datasets.Image(), label=datasets.Value("string"))
    train = {
        "image": images(12, 6) + images(243, 6) + images(128, 6),
        "label": ["ant"] * 6 + ["cat"] * 6 + ["dog"] * 6,
    }
    test = {"image": images(12, 3) + images(128, 3), "label": ["ant"] * 3 + ["dog"] * 3}
    splits = {name: datasets.Dataset.from_dict(d, features=features) for name, d in (("train", train), ("test", test))}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "named"))
    (row,) = evaluate_backbone(str(export), str(tmp_path / "named"), k=3, pool="mean", cache=False)
    assert (row["num_train"], row["num_test"]) == (18, 6)
    assert row["top1"] == 1.0
