"""The random-init floor: the method's own step-0 weights, BatchNorm statistics of real images, labelled rows."""

import copy
import json

import datasets
import pytest
import torch
from accelerate.utils import set_seed
from conftest import (
    TINY_CONFIGS,
    tiny_byol_config,
    tiny_dino_resnet_config,
    tiny_mae_config,
    tiny_resnet_config,
    write_square_folders,
)
from transformers import AutoModel

import ssl_hf
import ssl_hf.evaluation.evaluate as evaluate_module
import ssl_hf.evaluation.floor as floor_module
from ssl_hf import BYOLForPreTraining, backbone_config
from ssl_hf.data.datasets import ImageSource, load_image_source
from ssl_hf.data.views import EvalView
from ssl_hf.evaluation import batchnorm_layers, calibrate_batchnorm, evaluate_backbone, load_random_init
from ssl_hf.export import export_pretrained


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keeps the imagefolder builds of these tests out of the user's ~/.cache/huggingface/datasets."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """`train/` and `test/` folders of 32x32 PNGs in two classes (dark and bright), 12 per class and split."""
    return write_square_folders(tmp_path_factory.mktemp("squares"), {"dark": 40, "bright": 200}, 12, 40)


def _record(method: str, config, seed: int) -> dict:
    """The part of a run's `training_args.json` the floor reads."""
    return {"method": method, "model_config": config.to_dict(), "training": {"seed": seed}}


def _run_final(tmp_path, method: str, config, seed: int):
    """What a run of 0 steps would leave: the model built as `pretrain` builds it, saved with its record."""
    set_seed(seed)
    model = ssl_hf.get_method(method).model_class(config)
    model.prepare_for_pretraining(resumed=False)
    final = tmp_path / "final"
    model.save_pretrained(final)
    (final / "training_args.json").write_text(json.dumps(_record(method, config, seed)))
    return final


def _equal_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def resnet_export(tmp_path):
    """A tiny BYOL ResNet exported from a model object: no training_args.json."""
    torch.manual_seed(0)
    return export_pretrained(BYOLForPreTraining(tiny_byol_config()).eval(), tmp_path / "resnet")


# ----------------------------------------------------------------------------------------- BatchNorm calibration


@pytest.mark.parametrize("stem", ["resnet-18", "resnet-18-small-stem"])
def test_calibration_gives_the_batch_statistics_at_each_batchnorm_input(stem):
    digits = load_image_source("digits", "train")
    source = ImageSource(digits.dataset.select(range(40)), digits.image_column, digits.raw_size)
    torch.manual_seed(0)
    model = AutoModel.from_config(
        backbone_config(stem, embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1] * 4)
    )
    model.eval()
    layers = batchnorm_layers(model)
    assert len(layers) > 3
    assert all(float(m.running_var.mean()) == 1.0 for m in layers)

    # independently: every BatchNorm's input on the same 40 images in one train-mode batch
    reference, inputs = copy.deepcopy(model), {}
    for name, m in reference.named_modules():
        if m in batchnorm_layers(reference):
            m.train()
            m.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0].detach()))
    with torch.no_grad():
        reference(pixel_values=EvalView(32)(source.read(slice(0, 40))[0])["pixel_values"])

    modes = []  # (module is a BatchNorm, its mode) of every module that runs during the calibration
    for m in model.modules():
        m.register_forward_pre_hook(lambda mod, args: modes.append((mod in layers, mod.training)))
    assert calibrate_batchnorm(model, source, EvalView(32), max_images=None, batch_size=64, device="cpu") == 40
    assert {training for is_bn, training in modes if not is_bn} == {False}  # only BatchNorm runs in train mode
    assert {training for is_bn, training in modes if is_bn} == {True}
    assert not any(m.training for m in model.modules())  # left in eval mode
    assert all(m.momentum == 0.1 for m in layers)  # momenta restored
    bns = dict(model.named_modules())
    assert len(inputs) == len(layers)
    for name, x in inputs.items():
        torch.testing.assert_close(bns[name].running_mean, x.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bns[name].running_var, x.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)


def test_calibration_draws_at_most_max_images_and_skips_models_without_batchnorm():
    digits = load_image_source("digits", "train")
    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_resnet_config())
    assert calibrate_batchnorm(model, digits, EvalView(32), max_images=50, batch_size=16, device="cpu") == 50
    first = [m.running_mean.clone() for m in batchnorm_layers(model)]
    calibrate_batchnorm(model, digits, EvalView(32), max_images=50, batch_size=16, device="cpu")
    assert all(torch.equal(a, m.running_mean) for a, m in zip(first, batchnorm_layers(model)))  # seeded draw
    vit = AutoModel.from_config(tiny_mae_config().backbone_config)
    before = copy.deepcopy(vit.state_dict())
    assert calibrate_batchnorm(vit, digits, EvalView(32), max_images=50, device="cpu") == 0
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())


# ----------------------------------------------------------------------------------------- the twin's weights


@pytest.mark.parametrize(
    ("method", "keep_adapters"), [*((m, False) for m in TINY_CONFIGS), ("tec", True)], ids=lambda v: str(v)
)
def test_the_twin_is_the_exported_encoder_at_step_0(tmp_path, method, keep_adapters):
    final = _run_final(tmp_path, method, TINY_CONFIGS[method](), seed=7)
    export = export_pretrained(final, tmp_path / "export", keep_adapters=keep_adapters)
    torch.manual_seed(123)  # the global RNG state does not matter
    twin, view, floor = load_random_init(export, seed=0)
    assert floor == {"floor_init": "method", "floor_seed": 7, "floor_method": method}
    assert _equal_state(twin, AutoModel.from_pretrained(export))
    assert type(twin) is type(AutoModel.from_pretrained(export))
    assert view.image_size == 32
    assert not twin.training


def test_the_floor_of_dino_on_a_resnet_is_its_step_0_teacher_with_calibrated_statistics(tmp_path, squares):
    export = export_pretrained(_run_final(tmp_path, "dino", tiny_dino_resnet_config(), seed=7), tmp_path / "export")
    twin, view, floor = load_random_init(export, seed=0)
    assert floor == {"floor_init": "method", "floor_seed": 7, "floor_method": "dino"}
    assert type(twin).__name__ == "SmallStemResNetModel"
    assert view.image_size == 32
    pool = ssl_hf.get_method("dino").feature_pool  # "cls": a CNN's pooled last stage
    (row,) = evaluate_backbone(str(export), str(squares), k=5, cache=False, pool=pool)
    (floor_row,) = evaluate_backbone(str(export), str(squares), random_init=True, k=5, cache=False, pool=pool)
    assert 0 <= row["top1"] <= 1
    assert (floor_row["floor"], floor_row["bn_calibration_images"]) == (
        f"DINO init at step 0, seed 7, BN statistics from 24 {squares} train images",
        24,
    )


def test_the_mae_twin_has_maes_init_not_transformers(tmp_path):
    export = export_pretrained(_run_final(tmp_path, "mae", tiny_mae_config(), seed=0), tmp_path / "export")
    twin, _, _ = load_random_init(export)
    (export / "training_args.json").unlink()
    plain, _, floor = load_random_init(export)
    assert floor == {"floor_init": "config", "floor_seed": 0}
    table = twin.embeddings.position_embeddings
    assert torch.equal(table[0, 0], torch.zeros(32))
    assert table.abs().max() <= 1
    assert not torch.equal(table, plain.embeddings.position_embeddings)


def test_without_a_usable_record_the_twin_is_transformers_init(tmp_path, resnet_export, caplog):
    torch.manual_seed(3)
    expected = AutoModel.from_config(AutoModel.from_pretrained(resnet_export).config)
    twin, _, floor = load_random_init(resnet_export, seed=3)
    assert floor == {"floor_init": "config", "floor_seed": 3}
    assert _equal_state(twin, expected)
    # a record of another architecture (or an unknown method) is not used either
    other = tiny_byol_config(backbone_config=tiny_resnet_config(hidden_sizes=[8, 16, 16, 64]))
    (resnet_export / "training_args.json").write_text(json.dumps(_record("byol", other, 1)))
    assert load_random_init(resnet_export, seed=3)[2]["floor_init"] == "config"
    assert "does not rebuild this architecture" in caplog.text
    (resnet_export / "training_args.json").write_text(json.dumps(_record("no-such-method", other, 1)))
    assert load_random_init(resnet_export, seed=3)[2]["floor_init"] == "config"


# ----------------------------------------------------------------------------------------- evaluate


def test_evaluate_calibrates_the_twin_only_and_labels_its_rows(resnet_export, squares, monkeypatch):
    calibrated, seen = [], []
    real_calibrate, real_extract = floor_module.calibrate_batchnorm, evaluate_module.extract_features

    def calibrate(model, *args, **kwargs):
        calibrated.append(model)
        return real_calibrate(model, *args, **kwargs)

    def extract(model, *args, **kwargs):
        seen.append({k: v.clone() for k, v in model.state_dict().items() if "running" in k})
        return real_extract(model, *args, **kwargs)

    monkeypatch.setattr(floor_module, "calibrate_batchnorm", calibrate)
    monkeypatch.setattr(evaluate_module, "extract_features", extract)
    kwargs = dict(protocols=("knn", "diagnostics"), k=5, diagnostics_images=8, cache=False)
    (knn, diagnostics) = evaluate_backbone(str(resnet_export), str(squares), **kwargs)
    assert not calibrated
    saved = AutoModel.from_pretrained(resnet_export).state_dict()
    assert seen
    assert all(torch.equal(saved[k], v) for stats in seen for k, v in stats.items())
    assert knn["backbone"] == "pretrained"
    assert "floor" not in knn

    seen.clear()
    rows = evaluate_backbone(str(resnet_export), str(squares), random_init=True, pool="mean", **kwargs)
    assert len(calibrated) == 1
    for row in rows:
        assert row["backbone"] == "random_init"
        assert row["floor_init"] == "config"
        assert row["bn_calibration_images"] == 24
        assert row["floor"] == f"random init (transformers), seed 0, BN statistics from 24 {squares} train images"
    assert rows[0]["pool"] == "mean"
    means = [v for k, v in seen[0].items() if k.endswith("running_mean")]
    assert all(v.abs().sum() > 0 for v in means)  # not the mean 0 of a fresh build


def test_the_floor_of_a_vit_is_not_calibrated_and_names_the_method(tmp_path, squares):
    export = export_pretrained(_run_final(tmp_path, "mae", tiny_mae_config(), seed=5), tmp_path / "export")
    (row,) = evaluate_backbone(str(export), str(squares), random_init=True, k=5, cache=False)
    assert (row["floor"], row["floor_init"], row["bn_calibration_images"]) == (
        "MAE init at step 0, seed 5",
        "method",
        0,
    )


def test_the_cache_keys_the_floor_by_init_and_calibration(resnet_export, squares, tmp_path, monkeypatch):
    passes = []
    real = evaluate_module.extract_features
    monkeypatch.setattr(evaluate_module, "extract_features", lambda *a, **k: passes.append(1) or real(*a, **k))
    kwargs = dict(random_init=True, k=5, cache_dir=tmp_path / "cache")
    first = evaluate_backbone(str(resnet_export), str(squares), **kwargs)[0]
    assert len(passes) == 2
    assert evaluate_backbone(str(resnet_export), str(squares), **kwargs)[0]["top1"] == first["top1"]
    assert len(passes) == 2  # the same floor: cached
    evaluate_backbone(str(resnet_export), str(squares), bn_calibration_images=8, **kwargs)
    assert len(passes) == 4  # other BatchNorm statistics
    (resnet_export / "training_args.json").write_text(json.dumps(_record("byol", tiny_byol_config(), 0)))
    evaluate_backbone(str(resnet_export), str(squares), **kwargs)
    assert len(passes) == 6  # now the method's init
