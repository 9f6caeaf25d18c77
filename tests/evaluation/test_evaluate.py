"""`evaluate_backbone` rows say what was measured: the pooling applied, the images used, top-5 only when it means something."""

import pytest
import torch
from conftest import tiny_mae_config, tiny_selfpatch_config, write_square_folders
from huggingface_hub import ModelCard

from ssl_hf import MAEForPreTraining, SelfPatchForPreTraining
from ssl_hf.cards import update_card
from ssl_hf.evaluation import evaluate_backbone
from ssl_hf.evaluation.knn import topk_accuracy
from ssl_hf.export import export_pretrained


PROTOCOLS = ("knn", "linear", "fewshot", "finetune", "diagnostics")
PER_CLASS = 8  # 3 classes: 24 train and 24 test images


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    levels = {"dark": 30, "grey": 128, "light": 225}
    return write_square_folders(tmp_path_factory.mktemp("three") / "squares", levels, PER_CLASS, noise=8)


def _evaluate(export, dataset, protocols=PROTOCOLS) -> list[dict]:
    return evaluate_backbone(
        str(export),
        str(dataset),
        protocols=protocols,
        pool="cls",  # what a user asks for; a backbone without a cls token averages anyway
        probe_epochs=2,
        shots=(2,),
        fewshot_trials=2,
        finetune_epochs=1,
        cache=False,
    )


@pytest.fixture(scope="module")
def selfpatch(tmp_path_factory, three_classes):
    """A tiny SelfPatch export (a SigLIP vision tower: no cls token), its rows of every image protocol, its card."""
    torch.manual_seed(0)
    export = export_pretrained(
        SelfPatchForPreTraining(tiny_selfpatch_config()).eval(), tmp_path_factory.mktemp("selfpatch") / "export"
    )
    rows = _evaluate(export, three_classes)
    update_card(export, {"results": rows})
    return export, rows


def test_a_backbone_without_cls_token_records_the_mean_pooling_it_applied(selfpatch):
    export, rows = selfpatch
    assert [r["protocol"] for r in rows] == list(PROTOCOLS)
    for row in rows:
        assert row["pool"] == "mean", row["protocol"]
        assert "cls" not in row["settings"], row["settings"]
        assert "mean" in row["settings"], row["settings"]
    section = (export / "README.md").read_text().split("## Evaluation")[1]
    assert "cls" not in section
    assert "knn (k=20, T=0.07, mean features)" in section


def test_a_vit_with_a_cls_token_still_says_cls(tmp_path, three_classes):
    torch.manual_seed(0)
    export = export_pretrained(MAEForPreTraining(tiny_mae_config()).eval(), tmp_path / "export")
    (row,) = _evaluate(export, three_classes, ("knn",))
    assert row["pool"] == "cls"
    assert row["settings"] == "k=20, T=0.07, cls features"


def test_labels_give_the_images_actually_used(selfpatch):
    export, rows = selfpatch
    by_protocol = {r["protocol"]: r for r in rows}
    finetune, diagnostics = by_protocol["finetune"], by_protocol["diagnostics"]
    assert finetune["num_train"] == 3 * PER_CLASS
    assert diagnostics["num_images"] == 3 * PER_CLASS
    assert finetune["settings"] == "full fine-tune, 1 ep on 24 images, layer decay 0.75, mean"
    assert diagnostics["settings"] == "24 images, mean features"
    text = (export / "README.md").read_text()
    assert "2000 images" not in text
    assert "1024 images" not in text
    assert "finetune (full fine-tune, 1 ep on 24 images" in text


def test_top5_is_not_applicable_with_fewer_than_six_classes(selfpatch):
    export, rows = selfpatch
    for row in rows:
        if row["protocol"] == "fewshot":
            assert row["top5_mean"] is None
            assert row["top5_std"] is None
            assert all(trial["top5"] is None for trial in row["per_trial"])
        elif row["protocol"] != "diagnostics":
            assert row["top5"] is None, row["protocol"]
            assert 0 <= row["top1"] <= 1
    card = ModelCard.load(export / "README.md")
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy"}  # no top-5 in the model-index
    table = [line for line in card.text.splitlines() if line.startswith("| pretrained |") and "%" in line]
    assert len(table) == 4  # knn, linear, fewshot, finetune
    assert all(line.endswith("| n/a |") for line in table)  # the top-5 column


@pytest.mark.parametrize(("num_classes", "has_top5"), [(2, False), (5, False), (6, True), (10, True)])
def test_top5_needs_six_classes(num_classes, has_top5):
    labels = torch.arange(12) % num_classes
    scores = torch.nn.functional.one_hot((labels + 1) % num_classes, num_classes).float()  # top-1 always wrong
    metrics = topk_accuracy(scores, labels)
    assert metrics["top1"] == 0.0
    assert (metrics["top5"] is not None) == has_top5
    if has_top5:
        assert 0 < metrics["top5"] <= 1
