"""benchmarks/stage_knn.py: per-stage k-NN of a ResNet export, next to raw pixels and the export's own feature."""

import json

import pytest
import torch
from bench_scripts import load

from ssl_hf.backbones import SmallStemResNetConfig, SmallStemResNetModel
from ssl_hf.evaluation.knn import knn_accuracy
from ssl_hf.export import write_processor


stage_knn = load("stage_knn")


@pytest.fixture(scope="module")
def digits_subset(tmp_path_factory):
    """100 / 50 images of the built-in digits, saved as a dataset folder."""
    import datasets

    from ssl_hf.data.builtin import load_builtin

    path = tmp_path_factory.mktemp("digits") / "subset"
    splits = {s: load_builtin("digits", s).select(range(n)) for s, n in (("train", 100), ("test", 50))}
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def test_every_stage_is_scored_and_the_last_average_is_the_export_feature(tmp_path, digits_subset):
    torch.manual_seed(0)
    config = SmallStemResNetConfig(
        hidden_sizes=[4, 8, 8, 8], embedding_size=4, depths=[1, 1, 1, 1], layer_type="basic"
    )
    model = SmallStemResNetModel(config).eval()
    model.save_pretrained(tmp_path / "export")
    write_processor(tmp_path / "export", 32)  # as `ssl-hf export`: the floor reads the input size from it
    argv = [str(tmp_path / "export"), "--name", "tiny", "--dataset", str(digits_subset), "--results", str(tmp_path)]
    stage_knn.main([*argv, "--floor"])
    record = json.loads((tmp_path / "stage_knn_tiny.json").read_text())

    assert sorted(record["stages"]) == sorted(f"stage{i}_{p}" for i in range(5) for p in ("avg", "max"))
    assert [record["stages"][f"stage{i}_avg"]["dim"] for i in range(5)] == [4, 4, 8, 8, 8]
    (train_x, train_y), (test_x, test_y) = (stage_knn.split_pixels(str(digits_subset), s) for s in ("train", "test"))
    with torch.no_grad():
        pooled = [model(x).pooler_output.flatten(1) for x in (train_x, test_x)]
    expected = 100 * knn_accuracy(pooled[0], train_y, pooled[1], test_y)["top1"]
    assert record["export_feature_knn"] == pytest.approx(expected, abs=0.01)
    raw = 100 * knn_accuracy(train_x.flatten(1), train_y, test_x.flatten(1), test_y)["top1"]
    assert record["raw_pixels_knn"] == pytest.approx(raw, abs=0.01)
    assert (record["num_train"], record["num_test"]) == (100, 50)
    # the floor: the same architecture rebuilt and BatchNorm-calibrated on the training images, scored stage by stage
    assert record["floor_stages"].keys() == record["stages"].keys()
    assert "BN statistics from 100" in record["floor"]


def test_one_name_per_export_is_required(tmp_path):
    with pytest.raises(SystemExit):
        stage_knn.main(["a", "b", "--name", "only_one", "--results", str(tmp_path)])
