"""`ssl-hf pretrain | export | evaluate` called in-process through `ssl_hf.cli.main`."""

import json
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
import torch
import yaml
from conftest import TINY_MODEL, write_square_folders
from huggingface_hub import ModelCard

import ssl_hf
import ssl_hf.training
from ssl_hf.cli import main


def _exit_code(argv) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def _write_yaml(path: Path, model=None, data=None, training=None) -> str:
    sections = {
        "model": {**TINY_MODEL, **(model or {})},
        "data": {"dataset": "digit-scenes", **(data or {})},
        "training": {"batch_size": 8, "max_steps": 50, **(training or {})},
    }
    path.write_text(yaml.safe_dump(sections))
    return str(path)


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keeps the imagefolder builds of these tests out of the user's ~/.cache/huggingface/datasets."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")


def _write_squares(root: Path) -> Path:
    """Labelled imagefolder: 5 near-black and 5 near-white 32x32 PNGs per class and split."""
    return write_square_folders(root, {"black": 12, "white": 243}, 5, 12)


# ------------------------------------------------------------------------------------------- argument errors


def test_typo_suggests_the_option(no_training, capsys):
    assert _exit_code(["pretrain", "--masc_ratio", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "unknown option --masc_ratio" in err
    assert "--mask_ratio" in err
    assert not no_training


def test_patch_size_must_divide_image_size(no_training, capsys):
    assert _exit_code(["pretrain", "--backbone", "vit-tiny", "--image_size", "32", "--patch_size", "5"]) == 2
    assert "does not divide" in capsys.readouterr().err
    assert not no_training


def test_unknown_method_lists_the_methods(no_training, capsys):
    assert _exit_code(["pretrain", "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err
    assert "mae" in err
    assert not no_training


def test_mask_ratio_out_of_range(no_training, capsys):
    assert _exit_code(["pretrain", "--mask_ratio", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "mask_ratio" in err
    assert "1.5" in err
    assert not no_training


def test_unknown_yaml_key_is_named(no_training, tmp_path, capsys):
    config = _write_yaml(tmp_path / "run.yaml", model={"mask_ration": 0.5})
    assert _exit_code(["pretrain", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "mask_ration" in err
    assert "--mask_ratio" in err  # the suggestion
    assert not no_training


def test_unknown_command(capsys):
    assert _exit_code(["bogus"]) == 2
    out = capsys.readouterr().out
    assert "unknown command 'bogus'" in out
    assert "pretrain" in out


def test_no_command_is_an_error_and_help_is_not(capsys):
    assert _exit_code([]) == 2
    assert _exit_code(["--help"]) == 0
    assert "ssl-hf {pretrain,export,evaluate,push,convert}" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- value parsing


def test_command_line_wins_over_yaml(no_training, tmp_path):
    config = _write_yaml(tmp_path / "run.yaml", training={"learning_rate": 0.01, "warmup_steps": 3})
    flags = ["--max_steps", "2", "--learning_rate", "1e-3", "--norm_pix_loss", "false", "--max_grad_norm", "1"]
    main(["pretrain", "--config", config, *flags, "--output_dir", str(tmp_path / "run")])
    (spec, config_obj, args) = no_training[0]
    assert spec.name == "mae"
    assert args.max_steps == 2  # command line over the file's 50
    assert args.batch_size == 8  # from the file
    assert args.warmup_steps == 3
    assert args.dataset == "digit-scenes"  # `data` section
    assert isinstance(args.learning_rate, float)
    assert args.learning_rate == 1e-3
    assert args.max_grad_norm == 1.0
    assert args.output_dir == str(tmp_path / "run")
    assert config_obj.mask_ratio == 0.5
    assert config_obj.norm_pix_loss is False
    assert config_obj.decoder_hidden_size == 16
    bb = config_obj.backbone_config
    assert (bb.hidden_size, bb.num_hidden_layers, bb.intermediate_size) == (32, 1, 37)
    assert (bb.image_size, bb.patch_size) == (32, 8)


def test_yaml_scientific_notation_is_a_float(no_training, tmp_path):
    config = _write_yaml(tmp_path / "run.yaml", training={"learning_rate": "1e-3"})
    assert "learning_rate: 1e-3" in Path(config).read_text()  # unquoted in the file
    main(["pretrain", "--config", config, "--output_dir", str(tmp_path / "run")])
    args = no_training[0][2]
    assert isinstance(args.learning_rate, float)


def test_non_numeric_value_is_rejected(no_training, capsys):
    assert _exit_code(["pretrain", "--learning_rate", "abc"]) == 2
    assert not no_training


# ------------------------------------------------------------------------------------------- end to end


def test_pretrain_export_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    config = _write_yaml(tmp_path / "run.yaml", training={"learning_rate": 0.01})
    main(["pretrain", "--config", config, "--max_steps", "2", "--learning_rate", "1e-3", "--output_dir", str(run)])
    assert "Pre-training finished" in capsys.readouterr().out
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    record = json.loads((run / "args.json").read_text())
    assert record["training"]["max_steps"] == 2
    assert record["training"]["batch_size"] == 8
    assert record["training"]["learning_rate"] == 1e-3
    assert record["derived"]["peak_learning_rate"] == 1e-3
    assert record["model_config"]["mask_ratio"] == 0.5
    assert record["model_config"]["backbone_config"]["hidden_size"] == 32
    assert (run / "final" / "config.json").is_file()

    export = tmp_path / "export"
    main(["export", str(run / "final"), "--output_dir", str(export)])
    assert json.loads((export / "config.json").read_text())["model_type"] == "vit"
    assert json.loads((export / "training_args.json").read_text())["training"]["max_steps"] == 2
    assert "digit-scenes (split train)" in (export / "README.md").read_text()

    # a run's width-37 MLP cannot be a Dinov2Model: a clean usage error, not a traceback
    capsys.readouterr()
    assert _exit_code(["export", str(run / "final"), "--output_dir", str(tmp_path / "d"), "--format", "dinov2"]) == 2
    assert "multiple of hidden_size" in capsys.readouterr().err

    squares = _write_squares(tmp_path / "squares")
    out = tmp_path / "eval" / "knn.json"
    main(["evaluate", str(export), "--dataset", str(squares), "--output", str(out), "--k", "5", "--update_card"])
    report = json.loads(out.read_text())
    assert report["dataset"] == str(squares)
    (result,) = report["results"]
    assert result["backbone"] == "pretrained"
    assert result["num_train"] == result["num_test"] == 10
    assert result["top1"] == 1.0
    # an MAE export: evaluated with the MAE family's mean of patch tokens unless --pool says otherwise
    assert "knn (k=5, T=0.07, mean features)" in capsys.readouterr().out
    card = ModelCard.load(export / "README.md")
    assert "| knn (k=5, T=0.07, mean features) |" in card.text
    assert "mae" in card.data.tags

    cheap = ["--k", "5", "--probe_epochs", "5", "--shots", "1,2,50", "--fewshot_trials", "1", "--finetune_epochs", "1"]
    cheap += [
        "--max_train_images",
        "32",
        "--max_test_images",
        "16",
        "--dense_epochs",
        "1",
        "--diagnostics_images",
        "32",
    ]
    output = tmp_path / "results.json"
    main(["evaluate", str(export), "--dataset", str(squares), "--protocol", "all", "--output", str(output), *cheap])
    printed = capsys.readouterr().out
    assert "knn (k=5" in printed
    assert "linear (BN+linear, SGD 5 ep" in printed
    rows = json.loads(output.read_text())["results"]
    # every protocol reports; 50-shot is skipped (5 images per class), the plots land in the export folder
    assert [r["protocol"] for r in rows] == ["knn", "linear", "fewshot", "fewshot", "finetune", "dense", "diagnostics"]
    assert [r["shots"] for r in rows if r["protocol"] == "fewshot"] == [1, 2]
    plots = sorted(p.name for p in (export / "plots").iterdir())
    assert plots == ["pretrained_squares_pca.png", "pretrained_squares_spectrum.png"]  # backbone and dataset


def test_export_without_config_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _exit_code(["export", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "out")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_evaluate_missing_export_exits_2(tmp_path, capsys, monkeypatch):
    assert _exit_code(["evaluate", str(tmp_path / "no_export"), "--dataset", "digits"]) == 2
    assert "ssl-hf export" in capsys.readouterr().err
    # conftest's HF_HUB_OFFLINE comes after huggingface_hub read it at import: make the Hub lookup fail fast
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    assert _exit_code(["evaluate", "runs/export", "--dataset", "digits"]) == 2  # relative: not a Hub traceback
    assert "No exported model at runs/export" in capsys.readouterr().err


def test_evaluate_compare_random_init_names_the_floor(tmp_path, capsys):
    """The floor is the run's own step-0 encoder with calibrated BatchNorm, evaluated with the same pooling."""
    from accelerate.utils import set_seed
    from conftest import tiny_byol_config

    config = tiny_byol_config()
    set_seed(4)
    ssl_hf.BYOLForPreTraining(config).save_pretrained(tmp_path / "final")  # a run's `final/` before any step
    record = {"method": "byol", "model_config": config.to_dict(), "training": {"seed": 4}}
    (tmp_path / "final" / "training_args.json").write_text(json.dumps(record))
    export, squares = tmp_path / "export", _write_squares(tmp_path / "squares")
    main(["export", str(tmp_path / "final"), "--output_dir", str(export)])
    out = tmp_path / "knn.json"
    argv = ["evaluate", str(export), "--dataset", str(squares), "--k", "5", "--pool", "mean", "--no_cache"]
    main([*argv, "--compare_random_init", "--output", str(out), "--update_card"])
    pretrained, floor = json.loads(out.read_text())["results"]
    assert (pretrained["backbone"], floor["backbone"]) == ("pretrained", "random_init")
    assert pretrained["pool"] == floor["pool"] == "mean"
    assert floor["floor"] == f"BYOL init at step 0, seed 4, BN statistics from 10 {squares} train images"
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("random_init")]
    assert len(printed) == 1
    assert printed[0].endswith(f"[floor: {floor['floor']}]")
    published = floor["floor"].replace(str(squares), "squares")  # the card names a local dataset by its folder
    assert f"| random_init ({published}) | knn (k=5, T=0.07, mean features) |" in (export / "README.md").read_text()


def test_tec_learns_from_a_previous_export_and_keeps_adapters_on_request(tmp_path, capsys):
    """MAE run -> export -> TEC run with --base_model that export -> plain export and --keep_adapters export."""
    base_run, tec_run = tmp_path / "mae", tmp_path / "tec"
    mae_yaml = _write_yaml(tmp_path / "mae.yaml", model={"num_hidden_layers": 2})
    main(["pretrain", "--config", mae_yaml, "--max_steps", "1", "--output_dir", str(base_run)])
    main(["export", str(base_run / "final"), "--output_dir", str(tmp_path / "mae_export")])
    tec_model = {k: v for k, v in TINY_MODEL.items() if k != "norm_pix_loss"}
    tec_model.update(method="tec", num_hidden_layers=2, adapter_group_size=1, attention_topk=3)
    (tmp_path / "tec.yaml").write_text(yaml.safe_dump({"model": tec_model, "training": {"batch_size": 8}}))
    argv = ["pretrain", "--config", str(tmp_path / "tec.yaml"), "--base_model", str(tmp_path / "mae_export")]
    main([*argv, "--max_steps", "1", "--output_dir", str(tec_run)])
    record = json.loads((tec_run / "args.json").read_text())
    assert record["method"] == "tec"
    assert record["model_config"]["base_model"] == str(tmp_path / "mae_export")
    assert {"loss_feature", "loss_attention"} <= set(json.loads((tec_run / "metrics.jsonl").read_text()))
    main(["export", str(tec_run / "final"), "--output_dir", str(tmp_path / "tec_export")])
    assert json.loads((tmp_path / "tec_export" / "config.json").read_text())["model_type"] == "vit"
    main(["export", str(tec_run / "final"), "--output_dir", str(tmp_path / "adapters"), "--keep_adapters"])
    assert json.loads((tmp_path / "adapters" / "config.json").read_text())["architectures"] == ["TECModel"]
    assert "import ssl_hf" in (tmp_path / "adapters" / "README.md").read_text()
    capsys.readouterr()
    # MAE has no adapters; a base cut into other patches is refused before training
    assert _exit_code(["export", str(base_run / "final"), "--output_dir", str(tmp_path / "x"), "--keep_adapters"]) == 2
    assert "has no adapters" in capsys.readouterr().err
    bad = [*argv, "--patch_size", "4", "--max_steps", "1", "--output_dir", str(tmp_path / "bad")]
    assert _exit_code(bad) == 2
    assert "--patch_size 8" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


@pytest.mark.parametrize(("method", "field", "value"), [("msbreg", "num_views", 3), ("dino", "local_crop_size", 12)])
def test_resnet_backbone_from_the_command_line(no_training, method, field, value):
    """ResNet flags exist when the backbone is a ResNet; --image_size goes to the method config (the size of BYOL's
    views, of DINO's global crops); with a ViT it sets the ViT's own size too."""
    import numpy as np
    import torch

    from ssl_hf.data.views import build_views

    argv = ["pretrain", "--method", method, "--backbone", "resnet-18-small-stem", "--image_size", "32"]
    main([*argv, "--hidden_sizes", "[8, 16, 16, 32]", "--embedding_size", "8", f"--{field}", str(value)])
    spec, config, _ = no_training[-1]
    assert spec.name == method
    assert config.backbone_config.model_type == "ssl_resnet_small_stem"
    assert config.backbone_config.hidden_sizes == [8, 16, 16, 32]
    assert (config.image_size, config.input_size, getattr(config, field)) == (32, 32, value)
    image = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    assert build_views(spec.views, config)([image], [np.random.default_rng(0)])["pixel_values"].shape[-2:] == (32, 32)
    main(["pretrain", "--method", method, "--backbone", "vit-tiny", "--image_size", "32", "--patch_size", "8"])
    _, config, _ = no_training[-1]
    assert config.backbone_config.image_size == config.input_size == 32


def test_byol_default_backbone_is_a_resnet(no_training):
    main(["pretrain", "--method", "byol", "--dataset", "some/hub-dataset"])  # not a 32-px built-in set
    _, config, _ = no_training[-1]
    assert config.backbone_config.model_type == "resnet"


def test_optimizer_flag(no_training):
    main(["pretrain", "--method", "mae", "--optimizer", "lars", "--momentum", "0.8"])
    _, _, args = no_training[-1]
    assert (args.optimizer, args.momentum) == ("lars", 0.8)


@pytest.mark.parametrize("method", ["mae", "asl", "tec", "byol", "msbreg", "dino", "selfpatch"])
def test_cpu_preset_sets_model_and_training_fields_and_flags_win(no_training, method):
    """`--preset <m>-cpu` alone picks its method; every field it sets reaches the config or the training arguments."""
    main(["pretrain", "--preset", f"{method}-cpu", "--eval_every", "7"])
    spec, config, args = no_training[-1]
    assert spec.name == method
    preset = ssl_hf.get_method(method).presets[f"{method}-cpu"]
    assert args.eval_every == 7  # the command line wins over the preset
    assert (args.max_steps, args.mixed_precision) == (preset["max_steps"], "auto")
    backbone = config.backbone_config
    assert backbone.image_size == 32 if backbone.model_type == "vit" else config.input_size == 32
    for key in ("hflip", "channel_permute_prob", "lars_trust_coefficient", "learning_rate", "base_learning_rate"):
        if key in preset:
            assert getattr(args, key) == preset[key]
    for key in ("num_views", "out_dim", "patch_out_dim", "use_bn_in_head", "mask_ratio", "attention_topk"):
        if key in preset:
            assert getattr(config, key) == preset[key]


def test_preset_of_another_method_is_named(no_training, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--method", "mae", "--preset", "byol-cpu"])
    assert exit_info.value.code == 2
    assert "byol-cpu is a preset of byol" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- pre-training folders


@pytest.fixture(scope="module")
def four_step_run(tmp_path_factory):
    """A finished 4-step tiny MAE run with checkpoints step_2 and step_4."""
    from conftest import reset_accelerate, tiny_mae_config, tiny_training_args

    run = tmp_path_factory.mktemp("cli_run") / "run"
    ssl_hf.training.pretrain(
        ssl_hf.get_method("mae"), tiny_mae_config(), tiny_training_args(run, max_steps=4, save_steps=2)
    )
    reset_accelerate()
    return run


def test_export_an_intermediate_checkpoint(four_step_run, tmp_path, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModel

    out = tmp_path / "export_step_2"
    main(["export", str(four_step_run / "checkpoints" / "step_2"), "--output_dir", str(out)])
    assert "Exported ViTModel" in capsys.readouterr().out
    encoder = AutoModel.from_pretrained(out)
    saved = load_file(four_step_run / "checkpoints" / "step_2" / "model.safetensors")
    final = load_file(four_step_run / "checkpoints" / "step_4" / "model.safetensors")
    shared = [k for k in encoder.state_dict() if f"backbone.{k}" in saved]
    assert len(shared) > 10
    for key in shared:
        assert torch.equal(encoder.state_dict()[key], saved[f"backbone.{key}"]), key
    assert any(not torch.equal(saved[f"backbone.{k}"], final[f"backbone.{k}"]) for k in shared)
    record = json.loads((out / "training_args.json").read_text())
    assert (record["derived"]["checkpoint_step"], record["training"]["max_steps"]) == (2, 4)
    assert "| optimiser steps | 2 |" in (out / "README.md").read_text()


@pytest.mark.parametrize("folder", ["final", "checkpoints/step_2"])
def test_evaluate_a_pretraining_folder_says_export_first(four_step_run, folder, capsys):
    path = four_step_run / folder
    assert _exit_code(["evaluate", str(path), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert len(err) < 400
    suggested = four_step_run / ("export" if folder == "final" else "export_step_2")
    assert f"Export first: ssl-hf export {path} --output_dir {suggested}" in err
