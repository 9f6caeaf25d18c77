"""Weighted k-NN (`knn_predict`, `knn_accuracy`) and `evaluate_knn` end to end on a tiny export."""

import math

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from conftest import tiny_mae_config
from PIL import Image

from ssl_hf import MAEForPreTraining
from ssl_hf.evaluation import evaluate_knn, knn_accuracy, knn_predict
from ssl_hf.export import export_pretrained


def _blobs(num_classes=5, per_class=50, dim=16, seed=0):
    """Class c is a Gaussian blob around 4 * e_c: separable by cosine similarity."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    centres = 4.0 * torch.eye(dim)[:num_classes]
    return centres[labels] + 0.5 * torch.randn(len(labels), dim, generator=g), labels


def test_knn_separable_blobs_are_perfect():
    train_x, train_y = _blobs(per_class=50, seed=0)
    test_x, test_y = _blobs(per_class=20, seed=1)
    metrics = knn_accuracy(train_x, train_y, test_x, test_y, k=20, temperature=0.07)
    assert metrics == {"top1": 1.0, "top5": None}  # 5 classes: top-5 is n/a


def test_knn_shuffled_train_labels_is_near_chance():
    # isotropic features: every test sample has its own neighbourhood, so chance (0.2) is estimated from 500 draws
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(500, 16, generator=g), torch.randn(500, 16, generator=g)
    train_y, test_y = torch.randint(0, 5, (500,), generator=g), torch.randint(0, 5, (500,), generator=g)
    assert knn_accuracy(train_x, train_y, test_x, test_y)["top1"] < 0.3
    # and on the separable blobs, shuffling the train labels destroys the perfect score
    blob_x, blob_y = _blobs(per_class=50, seed=0)
    blob_test_x, blob_test_y = _blobs(per_class=20, seed=1)
    shuffled = blob_y[torch.randperm(len(blob_y), generator=g)]
    assert knn_accuracy(blob_x, shuffled, blob_test_x, blob_test_y)["top1"] < 0.45


def test_knn_predict_k1_is_nearest_neighbour_with_exp_weight():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    test = torch.tensor([[0.9, 0.1], [0.1, 2.0], [-30.0, 5.0]])  # cosine: the scale does not matter
    scores = knn_predict(train, labels, test, num_classes=3, k=1, temperature=0.5)
    assert scores.argmax(1).tolist() == [0, 1, 2]
    cos = torch.nn.functional.cosine_similarity(test, train, dim=1)  # each test row against its own neighbour
    expected = torch.diag(torch.exp(cos / 0.5))
    torch.testing.assert_close(scores, expected)


def test_temperature_changes_weights_not_the_k1_argmax():
    train_x, train_y = _blobs(per_class=10, seed=0)
    test_x, _ = _blobs(per_class=5, seed=1)
    sharp = knn_predict(train_x, train_y, test_x, 5, k=1, temperature=0.07)
    flat = knn_predict(train_x, train_y, test_x, 5, k=1, temperature=1.0)
    assert not torch.allclose(sharp, flat)
    assert torch.equal(sharp.argmax(1), flat.argmax(1))


def test_weighted_vote_beats_majority_at_low_temperature():
    # one very close neighbour of class 0 against two farther ones of class 1
    train = torch.tensor([[1.0, 0.0], [math.cos(1.0), math.sin(1.0)], [math.cos(1.0), -math.sin(1.0)]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, test, 2, k=3, temperature=0.07).argmax(1).item() == 0
    assert knn_predict(train, labels, test, 2, k=3, temperature=100.0).argmax(1).item() == 1


def test_chunking_gives_the_same_scores():
    train_x, train_y = _blobs(per_class=10, seed=0)
    test_x, _ = _blobs(per_class=4, seed=1)  # 20 test samples: 6 full chunks of 3 and one of 2
    whole = knn_predict(train_x, train_y, test_x, 5, k=7)
    chunked = knn_predict(train_x, train_y, test_x, 5, k=7, chunk_size=3)
    assert chunked.shape == (20, 5)
    torch.testing.assert_close(chunked, whole)


def test_k_larger_than_train_set_uses_every_sample():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores = knn_predict(train, torch.tensor([0, 1]), torch.tensor([[1.0, 1.0]]), 2, k=20, temperature=1.0)
    torch.testing.assert_close(scores, torch.full((1, 2), math.exp(math.sqrt(0.5))))


def test_top5_counts_the_runner_up_class():
    # 8 classes; the test sample's true class (7) is the second best: top1 misses, top5 hits
    train = torch.tensor([[1.0, 0.0], [math.cos(0.3), math.sin(0.3)]])
    train_y = torch.tensor([3, 7])
    metrics = knn_accuracy(train, train_y, torch.tensor([[1.0, 0.0]]), torch.tensor([7]), k=2)
    assert metrics == {"top1": 0.0, "top5": 1.0}


# ------------------------------------------------------------------------------------- evaluate_knn end to end


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keeps the imagefolder builds of these tests out of the user's ~/.cache/huggingface/datasets."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("knn_export")
    torch.manual_seed(0)
    model = MAEForPreTraining(tiny_mae_config())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return export_pretrained(model, root / "export")


def _write_squares(root, labelled=True, per_class=10):
    """Near-black and near-white 32x32 PNGs (per-pixel jitter), `<split>/<class>/` (or `<split>/` if unlabelled)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, level in (("black", 12), ("white", 243)):
            folder = root / split / name if labelled else root / split
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.clip(level + rng.integers(-12, 13, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return _write_squares(tmp_path_factory.mktemp("squares"))


def test_evaluate_knn_on_an_image_folder(tiny_export, squares):
    result = evaluate_knn(str(tiny_export), str(squares))
    assert result["protocol"] == "knn"
    assert result["backbone"] == "pretrained"
    assert result["settings"] == "k=20, T=0.07, cls features"
    assert result["num_train"] == 20
    assert result["num_test"] == 20
    assert result["top1"] == 1.0
    assert result["top5"] is None  # 2 classes


def test_evaluate_knn_random_init(tiny_export, squares):
    result = evaluate_knn(str(tiny_export), str(squares), random_init=True, k=5)
    assert result["backbone"] == "random_init"
    assert result["settings"].startswith("k=5,")
    assert result["top1"] == 1.0  # colour is separable even for random features


def test_evaluate_knn_unknown_label_column(tiny_export, squares):
    with pytest.raises(ValueError, match="--label_column"):
        evaluate_knn(str(tiny_export), str(squares), label_column="class")


def test_evaluate_knn_unlabelled_folder(tiny_export, tmp_path):
    # datasets gives images directly under train/ and test/ a ClassLabel column full of nulls
    folder = _write_squares(tmp_path / "flat", labelled=False, per_class=2)
    with pytest.raises(ValueError, match="--label_column"):
        evaluate_knn(str(tiny_export), str(folder))


def test_evaluate_knn_missing_export(tmp_path, squares, monkeypatch):
    with pytest.raises(FileNotFoundError, match="ssl-hf export"):
        evaluate_knn(str(tmp_path / "no_such_export"), str(squares))
    # a relative path with one slash looks like a Hub id: still a FileNotFoundError, not a Hub OSError
    # conftest's HF_HUB_OFFLINE comes after huggingface_hub read it at import: make the Hub lookup fail fast
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="ssl-hf export"):
        evaluate_knn("runs/export", str(squares))


def test_evaluate_knn_skips_unreadable_images(tiny_export, tmp_path):
    folder = _write_squares(tmp_path / "squares", per_class=3)
    (folder / "train" / "white" / "broken.png").write_bytes(b"not a png")
    result = evaluate_knn(str(tiny_export), str(folder), batch_size=1)  # one batch holds only the broken file
    assert result["num_train"] == 6
    assert result["num_test"] == 6
    assert result["top1"] == 1.0
