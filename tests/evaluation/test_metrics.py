"""The `evaluate` metric modules shipped with ssl_hf: offline loading by path, and the same numbers as the tensor code."""

import fnmatch
import os
import socket
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch

from ssl_hf.evaluation import metric_loading
from ssl_hf.evaluation.dense import confusion_matrix, iou_metrics
from ssl_hf.evaluation.knn import topk_accuracy
from ssl_hf.evaluation.metric_loading import METRICS_DIR, SHIPPED_METRICS, load_metric, shipped_metric_path


def _tensor_topk(scores, labels):
    """The float32 tensor implementation `knn.topk_accuracy` had before it went through `evaluate`."""
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1)
    return {"top1": hits[:, 0].float().mean().item(), "top5": hits.any(1).float().mean().item()}


def test_the_session_is_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest: every load below works without the Hub


@pytest.mark.parametrize("name", SHIPPED_METRICS)
def test_shipped_metrics_load_offline_by_path(name):
    metric = load_metric(name)
    assert isinstance(metric, evaluate.EvaluationModule)
    assert metric.name == name
    assert load_metric(name) is metric  # cached
    assert (shipped_metric_path(name) / f"{name}.py").is_file()
    direct = evaluate.load(str(shipped_metric_path(name)))  # plain evaluate, by path
    assert isinstance(direct, evaluate.EvaluationModule)
    assert all((metric.description, metric.citation, metric.inputs_description, metric.features))


@pytest.mark.parametrize("name", ["ssl-hf-no-such-metric", "someone/ssl-hf-no-such-metric"])
def test_a_hub_name_offline_gives_a_clear_error(name):
    with pytest.raises(FileNotFoundError, match=r"not shipped with ssl_hf .*topk_accuracy, mean_iou.*offline mode"):
        load_metric(name)


def test_offline_hub_names_send_no_request(monkeypatch):
    # evaluate 0.4 only reads HF_EVALUATE_OFFLINE; load_metric makes it honour HF_HUB_OFFLINE too
    def no_network(host, *args, **kwargs):
        raise AssertionError(f"network lookup of {host}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    flag = evaluate.config.HF_EVALUATE_OFFLINE
    with pytest.raises(FileNotFoundError, match="offline mode"):
        load_metric("accuracy-ssl-hf-test")
    assert evaluate.config.HF_EVALUATE_OFFLINE is flag  # restored


def test_a_missing_local_path_keeps_evaluates_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Couldn't find a module script"):
        load_metric(str(tmp_path / "nothing"))


def test_shipped_metric_names_are_not_looked_up_on_the_hub(monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("went to the Hub")

    monkeypatch.setattr(evaluate.loading, "HubEvaluationModuleFactory", no_hub)
    metric_loading._load.cache_clear()
    assert load_metric("mean_iou").name == "mean_iou"


def test_metric_scripts_and_model_cards_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ssl_hf"]
    package = METRICS_DIR.parents[1]
    files = [*(package / "model_cards").iterdir(), *METRICS_DIR.glob("*/*.py")]
    assert {p.name for p in files} >= {"template.md", "mae.yaml", "topk_accuracy.py", "mean_iou.py"}
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


# ------------------------------------------------------------------------------------------------ topk_accuracy


def test_topk_accuracy_by_hand():
    metric = load_metric("topk_accuracy")
    ranked = [[3, 1, 2, 0, 4, 5], [0, 2, 1, 3, 4, 5], [5, 4, 3, 2, 1, 0], [1, 0, 2, 3, 4, 5]]
    # hits: first; third; sixth (outside the top 5); second
    assert metric.compute(predictions=ranked, references=[3, 1, 0, 0]) == {"top1": 0.25, "top5": 0.75}
    # fewer than 5 ranked ids: top-k with k the given length; rows may differ in length
    assert metric.compute(predictions=[[2, 1], [0]], references=[1, 1]) == {"top1": 0.0, "top5": 0.5}


@pytest.mark.parametrize(("samples", "classes"), [(1, 1), (7, 3), (100, 5), (1000, 10), (333, 100)])
def test_topk_accuracy_matches_the_tensor_code(samples, classes):
    g = torch.Generator().manual_seed(samples + classes)
    scores, labels = torch.randn(samples, classes, generator=g), torch.randint(0, classes, (samples,), generator=g)
    expected = _tensor_topk(scores, labels)
    # bit-identical, float32 rounding included; top-5 is n/a (None) with 5 classes or fewer
    assert topk_accuracy(scores, labels) == expected | ({"top5": None} if classes < 6 else {})
    top = scores.topk(min(5, classes), dim=1).indices
    exact = load_metric("topk_accuracy").compute(predictions=top.numpy(), references=labels.numpy())
    hits = top == labels.view(-1, 1)
    assert exact == {"top1": int(hits[:, 0].sum()) / samples, "top5": int(hits.any(1).sum()) / samples}
    assert {k: float(np.float32(v)) for k, v in exact.items()} == expected


def test_topk_accuracy_rejects_empty_rankings():
    with pytest.raises(ValueError, match="at least one predicted class"):
        load_metric("topk_accuracy").compute(predictions=[[1], []], references=[1, 0])


# ----------------------------------------------------------------------------------------------------- mean_iou


def test_mean_iou_by_hand_on_three_classes():
    # two 2x2 images, classes 0, 1, 2 (2 is never predicted)
    pred = [[0, 0, 1, 1], [1, 1, 0, 0]]
    true = [[0, 1, 1, 1], [1, 2, 0, 0]]
    # confusion (row true, column pred): true 0 -> [3, 0, 0]; true 1 -> [1, 3, 0]; true 2 -> [0, 1, 0]
    # IoU_0 = 3 / (3 + 1 + 0) ; IoU_1 = 3 / (3 + 1 + 1) ; IoU_2 = 0 / (0 + 0 + 1); 6 of 8 pixels right
    result = load_metric("mean_iou").compute(predictions=pred, references=true, num_classes=4)
    assert result["per_class_iou"] == pytest.approx([75.0, 60.0, 0.0, None])
    assert result["per_class_iou"][3] is None  # class 3 is in neither the prediction nor the ground truth
    assert result["mean_iou"] == pytest.approx((75 + 60 + 0) / 3)
    assert result["pixel_accuracy"] == 75.0
    counts = load_metric("mean_iou", "counts").compute(
        predictions=[0, 0, 1, 1], references=[0, 1, 1, 2], counts=[3, 1, 3, 1], num_classes=4
    )
    assert counts == result
    assert iou_metrics(confusion_matrix(torch.tensor(pred), torch.tensor(true), 4)) == result


@pytest.mark.parametrize(("images", "side", "classes"), [(1, 4, 2), (5, 8, 3), (20, 16, 11), (3, 32, 40)])
def test_mean_iou_matches_the_tensor_code(images, side, classes):
    g = torch.Generator().manual_seed(images * side + classes)
    true = torch.randint(0, classes, (images, side * side), generator=g)
    pred = torch.where(
        torch.rand(true.shape, generator=g) < 0.6, true, torch.randint(0, classes, true.shape, generator=g)
    )
    pred[pred == 1] = 0  # class 1 only in the ground truth
    if classes > 2:
        true[true == 2], pred[pred == 2] = 0, 0  # class 2 absent from both: None
    confusion = confusion_matrix(pred, true, classes)
    expected = iou_metrics(confusion)  # what dense_probe uses: the grouped (counts) form
    c = confusion.tolist()
    for k in range(classes):  # per-class IoU from the counts by hand
        union = sum(c[k]) + sum(row[k] for row in c) - c[k][k]
        assert expected["per_class_iou"][k] == (None if union == 0 else pytest.approx(100 * c[k][k] / union))
    metric = load_metric("mean_iou")
    assert metric.compute(predictions=pred.numpy(), references=true.numpy(), num_classes=classes) == expected
    for p, t in zip(pred.split(2), true.split(2)):  # streamed in batches of images
        metric.add_batch(predictions=p.numpy(), references=t.numpy())
    assert metric.compute(num_classes=classes) == expected


def test_mean_iou_images_of_different_sizes():
    g = torch.Generator().manual_seed(0)
    pred = [torch.randint(0, 5, (n,), generator=g) for n in (16, 64, 9)]
    true = [torch.randint(0, 5, (n,), generator=g) for n in (16, 64, 9)]
    expected = iou_metrics(confusion_matrix(torch.cat(pred), torch.cat(true), 5))
    result = load_metric("mean_iou").compute(
        predictions=[p.tolist() for p in pred], references=[t.tolist() for t in true], num_classes=5
    )
    assert result == expected


def test_mean_iou_errors_leave_the_shared_module_usable():
    metric = load_metric("mean_iou")
    with pytest.raises(ValueError, match=r"Class ids must lie in \[0, num_classes=3\)"):
        metric.compute(predictions=[[0, 3]], references=[[0, 1]], num_classes=3)
    with pytest.raises(ValueError, match="as many pixels"):
        metric.compute(predictions=[[0, 1, 1], [0]], references=[[0, 1], [0, 1]], num_classes=3)
    with pytest.raises(ValueError, match='config_name="counts"'):
        metric.compute(predictions=[[0]], references=[[0]], counts=[1], num_classes=3)
    with pytest.raises(ValueError, match="counts must be >= 0"):
        load_metric("mean_iou", "counts").compute(predictions=[0], references=[0], counts=[-1], num_classes=3)
    with pytest.raises(ValueError, match="Unknown mean_iou configuration"):
        load_metric("mean_iou", "pixels")
    result = metric.compute(predictions=[[0, 1]], references=[[0, 1]], num_classes=3)
    assert result == {"mean_iou": 100.0, "pixel_accuracy": 100.0, "per_class_iou": [100.0, 100.0, None]}
