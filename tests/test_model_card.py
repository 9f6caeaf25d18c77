"""Model cards (issue 7): Hub metadata (tags, datasets, base_model, model-index), how-to-use snippet, result tables."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_mae_config, tiny_tec_config
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from PIL import Image

from ssl_hf import MAEForPreTraining, TECForPreTraining
from ssl_hf.cards import CARDS_DIR, _evaluation_section, card_eval_results, hub_id, update_card
from ssl_hf.export import export_pretrained


REPO_ID = "me/tiny-mae"
KNN = {
    "protocol": "knn",
    "backbone": "pretrained",
    "dataset": "digits",
    "split": "test",
    "pool": "cls",
    "settings": "k=20, T=0.07, cls features",
    "k": 20,
    "temperature": 0.07,
    "top1": 0.5,
    "top5": 0.9,
}
LINEAR = {
    "protocol": "linear",
    "backbone": "pretrained",
    "dataset": "digits",
    "split": "test",
    "pool": "cls",
    "settings": "BN+linear, SGD 100 ep, cls features",
    "epochs": 100,
    "top1": 0.61234,
    "top5": 0.95,
}
DENSE = {
    "protocol": "dense",
    "backbone": "pretrained",
    "dataset": "digit-scenes",
    "split": "test",
    "settings": "BN+linear per patch, SGD 10 ep, 4x4 patches of 8 px",
    "epochs": 10,
    "patch_size": 8,
    "mean_iou": 23.456,  # dense metrics are percentages already
    "pixel_accuracy": 80.1,
}
RANDOM_KNN = {**KNN, "backbone": "random_init", "top1": 0.2, "top5": 0.6}
RANDOM_DENSE = {**DENSE, "backbone": "random_init", "mean_iou": 5.0, "pixel_accuracy": 40.0}
RESULTS = {"model": "export", "dataset": "digits", "results": [KNN, LINEAR, DENSE, RANDOM_KNN, RANDOM_DENSE]}

DIGITS = {"dataset_type": "digits", "dataset_name": "digits (ssl_hf built-in)", "dataset_split": "test"}
SCENES = {"dataset_type": "digit-scenes", "dataset_name": "digit-scenes (ssl_hf built-in)", "dataset_split": "test"}
CLASSIFICATION = {"task_type": "image-classification", "task_name": "Image Classification"}
SEGMENTATION = {"task_type": "image-segmentation", "task_name": "Image Segmentation"}
EXPECTED = [
    EvalResult(
        **CLASSIFICATION,
        **DIGITS,
        metric_type="accuracy",
        metric_value=50.0,
        metric_name="k-NN top-1 (k=20, T=0.07, cls)",
    ),
    EvalResult(
        **CLASSIFICATION,
        **DIGITS,
        metric_type="top-5 accuracy",
        metric_value=90.0,
        metric_name="k-NN top-5 (k=20, T=0.07, cls)",
    ),
    EvalResult(
        **CLASSIFICATION,
        **DIGITS,
        metric_type="accuracy",
        metric_value=61.23,
        metric_name="linear probe top-1 (100 epochs, cls)",
    ),
    EvalResult(
        **CLASSIFICATION,
        **DIGITS,
        metric_type="top-5 accuracy",
        metric_value=95.0,
        metric_name="linear probe top-5 (100 epochs, cls)",
    ),
    EvalResult(
        **SEGMENTATION,
        **SCENES,
        metric_type="mean_iou",
        metric_value=23.46,
        metric_name="dense patch probe mIoU (10 epochs, patch 8)",
    ),
    EvalResult(
        **SEGMENTATION,
        **SCENES,
        metric_type="pixel accuracy",
        metric_value=80.1,
        metric_name="dense patch probe pixel accuracy (10 epochs, patch 8)",
    ),
]


def _mae() -> MAEForPreTraining:
    torch.manual_seed(0)
    return MAEForPreTraining(tiny_mae_config()).eval()


def _front_matter(path) -> dict:
    text = path.read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md has no YAML front matter"
    return yaml.safe_load(match.group(1))


def _python_block(text: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture(scope="module")
def mae_export(tmp_path_factory):
    """A tiny MAE exported with knn, linear, dense and random-init results."""
    return export_pretrained(_mae(), tmp_path_factory.mktemp("card") / "export", results=RESULTS, repo_id=REPO_ID)


def test_card_parses_back_with_the_hub_metadata(mae_export):
    card = ModelCard.load(mae_export / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert data["license"] == "apache-2.0"
    assert data["tags"][:3] == ["self-supervised", "ssl_hf", "mae"]
    assert "masked-image-modeling" in data["tags"]  # the method yaml's tags
    assert "datasets" not in data  # no training record, and built-in sets are not Hub datasets anyway
    assert "base_model" not in data  # MAE learns from pixels
    assert card.data.model_name == REPO_ID
    assert "{{" not in card.text
    assert "{%" not in card.text


def test_model_index_round_trips_without_random_init(mae_export):
    data = ModelCard.load(mae_export / "README.md").data.to_dict()
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == REPO_ID
    assert results == EXPECTED  # random-init rows are not the model's results
    assert 20.0 not in [r.metric_value for r in results]
    assert card_eval_results(RESULTS) == EXPECTED
    assert eval_results_to_model_index(REPO_ID, EXPECTED) == data["model-index"]


def test_metadata_validates_locally(mae_export):
    metadata = ModelCard.load(mae_export / "README.md").data.to_dict()
    assert ModelCardData(**metadata).to_dict() == metadata
    front = _front_matter(mae_export / "README.md")
    assert isinstance(front, dict)
    assert front == metadata
    # the Hub's model-index shape: [{name, results: [{task: {type}, dataset: {type, name}, metrics: [{type, value}]}]}]
    (entry,) = front["model-index"]
    assert set(entry) == {"name", "results"}
    assert isinstance(entry["name"], str)
    assert len(entry["results"]) == 2  # one per (task, dataset, split): classification on digits, dense on scenes
    for result in entry["results"]:
        assert isinstance(result["task"]["type"], str)
        assert isinstance(result["dataset"]["type"], str)
        assert isinstance(result["dataset"]["name"], str)
        assert result["metrics"]
        for metric in result["metrics"]:
            assert isinstance(metric["type"], str)
            assert isinstance(metric["value"], float)


def test_text_tables_show_image_and_dense_rows_with_the_random_floor(mae_export):
    text = (mae_export / "README.md").read_text()
    assert "| backbone | protocol | dataset | top-1 | top-5 |" in text
    assert "| pretrained | knn (k=20, T=0.07, cls features) | digits | 50.00 % | 90.00 % |" in text
    assert "| pretrained | linear (BN+linear, SGD 100 ep, cls features) | digits | 61.23 % | 95.00 % |" in text
    assert "| random_init | knn (k=20, T=0.07, cls features) | digits | 20.00 % | 60.00 % |" in text
    assert "| backbone | protocol | dataset | mIoU | pixel accuracy |" in text
    dense = "| pretrained | dense (BN+linear per patch, SGD 10 ep, 4x4 patches of 8 px) | digit-scenes | 23.46 % |"
    assert f"{dense} 80.10 % |" in text
    assert "| random_init | dense" in text
    assert "not results of this model" in text


def test_how_to_use_has_at_most_five_lines_and_runs(mae_export, tmp_path, monkeypatch):
    code = _python_block((mae_export / "README.md").read_text())
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 5
    assert "AutoModel.from_pretrained" in code
    assert 'pipeline("image-feature-extraction"' in code
    assert "import ssl_hf" not in code  # a stock ViTModel
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.jpg")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(code.replace(f'"{REPO_ID}"', repr(str(mae_export))), namespace)  # the snippet itself, on the local export
    assert namespace["features"].shape == (1, 32)
    assert type(namespace["model"]).__name__ == "ViTModel"


def test_intended_uses_and_limitations(mae_export):
    text = (mae_export / "README.md").read_text()
    section = text[text.index("## Intended uses and limitations") : text.index("## Citation")]
    assert "Feature extraction" in section  # intended use from mae.yaml
    assert "**Limitations.**" in section
    assert "drop-path" in section
    assert "tiny scale" in section


def test_every_method_yaml_has_limitations():
    for path in sorted(CARDS_DIR.glob("*.yaml")):
        info = yaml.safe_load(path.read_text())
        for field in ("method_title", "paper_short", "method_summary", "intended_use", "limitations", "bibtex"):
            assert info.get(field), f"{path.name}: {field}"


def _training_record(dataset: str) -> dict:
    return {
        "method": "mae",
        "model_config": {},
        "training": {"dataset": dataset, "train_split": "train", "max_steps": 10, "seed": 0},
        "derived": {"global_batch_size": 8, "peak_learning_rate": 1e-3, "num_processes": 1},
    }


@pytest.mark.parametrize(
    ("dataset", "in_metadata", "in_text"),
    [
        (
            "ILSVRC/imagenet-1k",
            ["ILSVRC/imagenet-1k"],
            "[ILSVRC/imagenet-1k](https://huggingface.co/datasets/ILSVRC/imagenet-1k) (split train)",
        ),
        ("digit-scenes", None, "digit-scenes (split train): ssl_hf's built-in synthetic set, not a Hub dataset"),
    ],
)
def test_training_dataset_is_in_datasets_only_when_a_hub_id(tmp_path, dataset, in_metadata, in_text):
    _mae().save_pretrained(tmp_path / "final")
    (tmp_path / "final" / "training_args.json").write_text(json.dumps(_training_record(dataset)))
    out = export_pretrained(tmp_path / "final", tmp_path / "export")
    card = ModelCard.load(out / "README.md")
    assert card.data.to_dict().get("datasets") == in_metadata
    assert in_text in card.text
    assert "| optimiser steps | 10 |" in card.text  # the training table is kept


def _tec() -> TECForPreTraining:
    torch.manual_seed(0)
    return TECForPreTraining(tiny_tec_config()).eval()  # its base model is a local folder


def test_tec_base_model_only_when_a_hub_id(tmp_path):
    model = _tec()
    local = export_pretrained(model, tmp_path / "local", repo_id="me/tec")
    card = ModelCard.load(local / "README.md")
    assert "base_model" not in card.data.to_dict()
    # named in the text instead, by its folder name: the local path means nothing elsewhere
    assert f"a local checkpoint, `{Path(model.config.base_model).name}`," in card.text
    assert model.config.base_model not in card.text

    model.config.base_model = "facebook/vit-mae-base"  # as if it had been loaded from the Hub
    hub = export_pretrained(model, tmp_path / "hub", repo_id="me/tec")
    card = ModelCard.load(hub / "README.md")
    assert card.data.to_dict()["base_model"] == "facebook/vit-mae-base"
    assert "[facebook/vit-mae-base](https://huggingface.co/facebook/vit-mae-base)" in card.text
    # evaluating later keeps it (the plain ViT export has no TEC config to read it from)
    update_card(hub, {"results": [KNN]})
    card = ModelCard.load(hub / "README.md")
    assert card.data.to_dict()["base_model"] == "facebook/vit-mae-base"
    assert card.data.model_name == "me/tec"
    assert [r.metric_value for r in card.data.eval_results] == [50.0, 90.0]


def test_ssl_hf_model_types_import_ssl_hf_within_five_lines(tmp_path):
    out = export_pretrained(_tec(), tmp_path / "adapters", keep_adapters=True, repo_id="me/tec-adapters")
    code = _python_block((out / "README.md").read_text())
    lines = [line for line in code.splitlines() if line.strip()]
    assert lines[0].startswith("import ssl_hf")
    assert len(lines) <= 5


def test_fewshot_finetune_and_unknown_protocols():
    fewshot = {"protocol": "fewshot", "backbone": "pretrained", "dataset": "digits", "split": "test"}
    fewshot.update(shots=10, trials=5, classifier="linear", top1_mean=0.4, top1_std=0.02, top5_mean=0.8, top5_std=0.01)
    finetune = {"protocol": "finetune", "backbone": "pretrained", "dataset": "ylecun/mnist", "split": "test"}
    finetune.update(settings="AdamW, layer decay 0.75", epochs=50, pool="cls", top1=0.99, top5=1.0)
    unknown = {"protocol": "attentive", "backbone": "pretrained", "dataset": "digits", "top1": 0.3, "top5": 0.7}
    broken = {"protocol": "knn", "backbone": "pretrained", "dataset": "digits", "top1": None}
    results = {"results": [fewshot, finetune, unknown, broken, "not a row"]}
    got = card_eval_results(results)
    assert [(r.metric_type, r.metric_value, r.metric_name, r.metric_args) for r in got] == [
        ("accuracy", 40.0, "10-shot linear top-1 (mean of 5 trials)", {"shots": 10, "trials": 5, "std": 2.0}),
        ("top-5 accuracy", 80.0, "10-shot linear top-5 (mean of 5 trials)", {"shots": 10, "trials": 5, "std": 1.0}),
        ("accuracy", 99.0, "fine-tune top-1 (50 epochs, cls)", None),
        ("top-5 accuracy", 100.0, "fine-tune top-5 (50 epochs, cls)", None),
    ]
    assert got[2].dataset_type == "ylecun/mnist"
    assert got[2].dataset_name == "ylecun/mnist"
    text = _evaluation_section(results)
    assert (
        "| pretrained | fewshot (10-shot linear, mean of 5 trials) | digits | 40.00 ± 2.00 % | 80.00 ± 1.00 % |"
        in text
    )
    assert "| pretrained | finetune (AdamW, layer decay 0.75) | ylecun/mnist | 99.00 % | 100.00 % |" in text
    assert "attentive" not in text
    assert "| pretrained | knn" not in text
    assert "Not evaluated yet" in _evaluation_section(None)
    assert "No result of a protocol" in _evaluation_section({"results": [unknown]})


def test_hub_id(tmp_path, monkeypatch):
    assert hub_id("facebook/vit-mae-base") == "facebook/vit-mae-base"
    assert hub_id("ILSVRC/imagenet-1k") == "ILSVRC/imagenet-1k"
    for name in ("digits", "digit-scenes", "cifar10", str(tmp_path), "./a/b", "a/b/c", "data/train.parquet", "", None):
        assert hub_id(name) is None, name
    (tmp_path / "runs" / "export").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_id("runs/export") is None  # an existing local folder, not a Hub id


def test_diagnostics_rows_give_a_geometry_table_and_link_plots_in_the_export():
    row = {
        "protocol": "diagnostics",
        "backbone": "pretrained",
        "dataset": "digits",
        "alignment": 0.164,
        "uniformity": -0.702,
        "effective_rank": 24.5,
        "token_cosine_similarity": 0.816,
        "plots": {
            "spectrum": "/x/export/plots/pretrained_spectrum.png",
            "projection": "/x/export/plots/pretrained_pca.png",
        },
    }
    text = _evaluation_section({"results": [KNN, row]})
    assert "| pretrained | digits | 0.164 | -0.702 | 24.5 | 0.816 |" in text
    assert "![pretrained_pca](plots/pretrained_pca.png)" in text
    assert card_eval_results({"results": [row]}) == []  # geometry is not a model-index result


@pytest.mark.parametrize(
    ("schedule", "cell"),
    [
        ({"warmup_steps": 40}, "0.00025 (ended in warm-up: step 10 of 40; configured peak 0.001)"),
        (
            {"warmup_steps": None, "warmup_ratio": 2.0},
            "0.0005 (ended in warm-up: step 10 of 20; configured peak 0.001)",
        ),
        ({"warmup_steps": 10}, "0.001"),  # the last step ran at the peak
        ({"warmup_steps": 4}, "0.001"),
    ],
)
def test_peak_learning_rate_is_the_one_reached(tmp_path, schedule, cell):
    record = _training_record("digit-scenes")  # 10 steps at a configured peak of 1e-3
    record["training"].update(schedule)
    _mae().save_pretrained(tmp_path / "final")
    (tmp_path / "final" / "training_args.json").write_text(json.dumps(record))
    text = (export_pretrained(tmp_path / "final", tmp_path / "export") / "README.md").read_text()
    assert f"| peak learning rate | {cell} |" in text
