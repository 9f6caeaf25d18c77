"""Few-shot classification on cached features: exact n-per-class draws, trial statistics, linear and k-NN heads."""

import pytest
import torch

from ssl_hf.evaluation.fewshot import fewshot_accuracy, fewshot_indices


def _blobs(per_class=30, classes=5, dim=16, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    x = torch.cat([c + spread * torch.randn(per_class, dim, generator=g) for c in centres])
    return x, torch.arange(classes).repeat_interleave(per_class)


def test_indices_pick_exactly_n_distinct_samples_per_class():
    labels = torch.tensor([3, 0, 1, 3, 0, 1, 3, 0, 1, 3, 3, 0])  # unsorted; class 3 has 5, classes 0/1 have 4/3
    for n in (1, 2, 3):
        idx = fewshot_indices(labels, n, seed=7)
        assert len(idx) == 3 * n
        assert len(set(idx.tolist())) == 3 * n
        assert torch.bincount(labels[idx], minlength=4).tolist() == [n, n, 0, n]
        assert torch.equal(idx, fewshot_indices(labels, n, seed=7))  # seeded
    draws = {tuple(fewshot_indices(labels, 2, seed=s).tolist()) for s in range(10)}
    assert len(draws) > 1


def test_too_few_samples_in_a_class_is_an_error():
    x, y = _blobs(per_class=6)
    x, y = x[1:], y[1:]  # class 0 keeps 5
    with pytest.raises(ValueError, match="class 0: 5"):
        fewshot_accuracy(x, y, x, y, shots=(1, 6), classifier="knn")
    with pytest.raises(ValueError, match="shots must be >= 1"):
        fewshot_indices(y, 0)
    with pytest.raises(ValueError, match="Unknown few-shot classifier"):
        fewshot_accuracy(x, y, x, y, classifier="svm")


@pytest.mark.parametrize("classifier", ["knn", "linear"])
def test_separable_features_are_perfect_at_one_shot(classifier):
    x, y = _blobs(seed=0)
    xt, yt = _blobs(seed=1)
    results = fewshot_accuracy(x, y, xt, yt, shots=(1, 5), trials=2, classifier=classifier)
    assert [r["shots"] for r in results] == [1, 5]
    for r in results:
        assert r["trials"] == 2
        assert len(r["per_trial"]) == 2
        assert r["classifier"] == classifier
        assert r["num_train"] == 5 * r["shots"]
        assert r["top1_mean"] == 1.0
        assert r["top1_std"] == 0.0
        assert r["top5_mean"] is None  # 5 classes: top-5 is n/a


def test_single_trial_has_zero_std_and_trials_vary():
    x, y = _blobs(spread=3.0, seed=0)  # overlapping classes: accuracy depends on the draw
    xt, yt = _blobs(spread=3.0, seed=1)
    (single,) = fewshot_accuracy(x, y, xt, yt, shots=(2,), trials=1, classifier="knn")
    assert single["top1_std"] == 0.0
    assert single["top5_std"] is None  # 5 classes
    assert single["top1_mean"] == single["per_trial"][0]["top1"]
    (many,) = fewshot_accuracy(x, y, xt, yt, shots=(2,), trials=4, classifier="knn")
    top1 = torch.tensor([t["top1"] for t in many["per_trial"]], dtype=torch.float64)
    assert many["top1_std"] > 0
    assert many["top1_std"] == pytest.approx(top1.std().item())  # sample std (ddof=1)
    assert many["top1_mean"] == pytest.approx(top1.mean().item())
    assert many["per_trial"][0]["top1"] == single["per_trial"][0]["top1"]  # trial 0 draws the same set
