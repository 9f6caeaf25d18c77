"""The feature cache: one forward pass serves later calls; a re-export or a change of settings recomputes."""

import os

import pytest
import torch
from transformers import ViTConfig, ViTModel

import ssl_hf.evaluation as evaluation
import ssl_hf.evaluation.evaluate as evaluate_module
from ssl_hf.evaluation.cache import FeatureCache, model_fingerprint


TINY = dict(
    hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24, image_size=32, patch_size=8
)


@pytest.fixture
def export(tmp_path):
    torch.manual_seed(0)
    root = tmp_path / "vit"
    ViTModel(ViTConfig(**TINY), add_pooling_layer=False).save_pretrained(root)
    (root / "preprocessor_config.json").write_text('{"size": {"height": 32, "width": 32}}')
    return root


@pytest.fixture
def counted(monkeypatch):
    """Counts the real feature passes (image-level and patch tokens)."""
    calls = {"pooled": 0, "tokens": 0}
    real_pooled, real_tokens = evaluate_module.extract_features, evaluate_module.extract_patch_features

    def pooled(*args, **kwargs):
        calls["pooled"] += 1
        return real_pooled(*args, **kwargs)

    def tokens(*args, **kwargs):
        calls["tokens"] += 1
        return real_tokens(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "extract_features", pooled)
    monkeypatch.setattr(evaluate_module, "extract_patch_features", tokens)
    return calls


DENSE = dict(max_train_images=16, max_test_images=8, dense_epochs=1)


def test_a_second_call_reuses_the_cached_features(export, counted, tmp_path):
    kwargs = dict(protocols=("knn", "dense"), cache_dir=tmp_path / "cache", **DENSE)
    first = evaluation.evaluate_backbone(str(export), **kwargs)
    assert counted == {"pooled": 2, "tokens": 2}  # train + test of each
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 4
    second = evaluation.evaluate_backbone(str(export), **kwargs)
    assert counted == {"pooled": 2, "tokens": 2}  # nothing recomputed
    strip = ("feature_seconds", "probe_seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in second] == [
        {k: v for k, v in r.items() if k not in strip} for r in first
    ]


def test_other_settings_and_a_re_export_recompute(export, counted, tmp_path):
    cache_dir = tmp_path / "cache"
    evaluation.evaluate_backbone(str(export), protocols=("knn",), cache_dir=cache_dir)
    evaluation.evaluate_backbone(str(export), protocols=("linear",), probe_epochs=1, cache_dir=cache_dir)
    assert counted["pooled"] == 2  # k-NN and linear probe share the cached pass
    evaluation.evaluate_backbone(str(export), protocols=("knn",), pool="mean", cache_dir=cache_dir)
    assert counted["pooled"] == 4  # other pooling
    evaluation.evaluate_backbone(str(export), protocols=("knn",), random_init=True, cache_dir=cache_dir)
    assert counted["pooled"] == 6  # other weights
    weights = export / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the folder was exported again
    evaluation.evaluate_backbone(str(export), protocols=("knn",), cache_dir=cache_dir)
    assert counted["pooled"] == 8


def test_cache_off_writes_nothing(export, counted, tmp_path):
    for _ in range(2):
        evaluation.evaluate_backbone(str(export), protocols=("knn",), cache=False, cache_dir=tmp_path / "cache")
    assert counted["pooled"] == 4
    assert not (tmp_path / "cache").exists()


def test_a_corrupt_entry_is_recomputed_and_replaced(tmp_path):
    store = FeatureCache(tmp_path)
    fields = {"model": "m", "fingerprint": "abc"}
    store.get_or_compute(fields, lambda: {"x": torch.arange(3.0)})
    store.path(fields).write_bytes(b"not a safetensors file")
    out = store.get_or_compute(fields, lambda: {"x": torch.ones(2)})
    assert torch.equal(out["x"], torch.ones(2))
    assert torch.equal(store.get_or_compute(fields, lambda: {"x": torch.zeros(1)})["x"], torch.ones(2))
    assert not list(tmp_path.glob(".*.tmp"))  # writes are atomic: no temp file left behind


def test_data_without_a_fingerprint_is_never_cached(tmp_path):
    store = FeatureCache(tmp_path)
    assert store.path({"fingerprint": None}) is None
    assert store.path({"fingerprint": "f"}) is not None


def test_model_fingerprint_names_hub_ids_and_random_init(export):
    assert model_fingerprint("org/model") == {"hub_id": "org/model"}
    local = model_fingerprint(export, random_init=True, seed=3)
    assert local["path"] == str(export.resolve())
    assert local["random_init_seed"] == 3
    assert [name for name, *_ in local["files"]] == ["config.json", "model.safetensors"]
