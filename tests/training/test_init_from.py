"""`ssl-hf pretrain --init_from DIR`: a new run from `ssl-hf convert --full` output, and the refusals."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).parents[1] / "convert"))
from official_checkpoints import (
    byol_state_dict,
    dino_full_checkpoint,
    mae_full_state_dict,
    selfpatch_full_checkpoint,
    timm_vit_state_dict,
)

from ssl_hf import METHODS
from ssl_hf.cli import main
from ssl_hf.models.dino import DINOForPreTraining
from ssl_hf.training.init_from import config_for_init, load_init_weights, read_init_config


RUN = ["--dataset", "digit-scenes", "--batch_size", "8", "--max_steps", "2", "--eval_every", "0", "--save_steps", "2"]


def _convert(tmp_path, name, obj, source_format, *flags) -> Path:
    torch.save(obj, tmp_path / f"{name}.pth")
    out = tmp_path / f"{name}-converted"
    main(["convert", "--from", source_format, str(tmp_path / f"{name}.pth"), "--output_dir", str(out), *flags])
    return out


@pytest.fixture(scope="module")
def mae_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mae")
    return _convert(
        tmp, "mae_full", {"model": mae_full_state_dict()}, "mae", "--full", "--decoder_num_attention_heads", "4"
    )


@pytest.fixture(scope="module")
def mae_run(mae_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "mae"
    main(["pretrain", "--method", "mae", "--init_from", str(mae_dir), *RUN, "--output_dir", str(run)])
    return run


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_mae_pretrains_from_a_converted_full_checkpoint(mae_dir, mae_run):
    losses = _losses(mae_run)
    assert len(losses) == 2
    assert all(math.isfinite(x) for x in losses)
    record = json.loads((mae_run / "args.json").read_text())
    assert record["training"]["init_from"] == str(mae_dir.absolute())
    saved = json.loads((mae_dir / "config.json").read_text())
    assert record["model_config"]["decoder_hidden_size"] == saved["decoder_hidden_size"] == 64


def test_the_floor_of_an_init_from_run_is_the_initialisation(mae_dir, mae_run, tmp_path):
    from ssl_hf.evaluation.features import load_random_init
    from ssl_hf.export import export_pretrained
    from ssl_hf.models.mae import MAEForPreTraining

    export = export_pretrained(mae_run / "final", tmp_path / "export")
    floor, _, info = load_random_init(export)
    assert info["floor_init"] == "init_from"
    start = MAEForPreTraining.from_pretrained(mae_dir).backbone.state_dict()
    shared = [name for name in floor.state_dict() if name in start]
    assert len(shared) == len(start)
    for name in shared:
        torch.testing.assert_close(floor.state_dict()[name], start[name], atol=0, rtol=0)


def test_dino_pretrains_from_a_converted_full_checkpoint(tmp_path):
    checkpoint = dino_full_checkpoint(timm_vit_state_dict())
    checkpoint["dino_loss"]["center"] = torch.randn(1, 32)
    dino_dir = _convert(tmp_path, "dino_full", checkpoint, "dino", "--full")
    model = DINOForPreTraining(read_init_config(METHODS["dino"], dino_dir))
    model.progress.fill_(0.5)
    load_init_weights(model, dino_dir)  # what the loop does at step 0
    torch.testing.assert_close(model.center, checkpoint["dino_loss"]["center"][0], atol=0, rtol=0)
    teacher = {k.removeprefix("head."): v for k, v in checkpoint["teacher"].items() if k.startswith("head.")}
    torch.testing.assert_close(model.teacher_head.last_layer.weight, teacher["last_layer.weight_v"], atol=0, rtol=0)
    assert float(model.progress) == 0  # the schedules restart
    run = tmp_path / "run"
    main(["pretrain", "--method", "dino", "--init_from", str(dino_dir), *RUN, "--output_dir", str(run)])
    assert all(math.isfinite(x) for x in _losses(run))


def test_selfpatch_pretrains_from_a_converted_full_checkpoint(tmp_path):
    selfpatch_dir = _convert(tmp_path, "selfpatch_full", selfpatch_full_checkpoint(), "selfpatch", "--full")
    run = tmp_path / "run"
    main(["pretrain", "--method", "selfpatch", "--init_from", str(selfpatch_dir), *RUN, "--output_dir", str(run)])
    assert all(math.isfinite(x) for x in _losses(run))


def test_byol_pretrains_from_a_converted_solo_learn_checkpoint(tmp_path):
    byol_dir = _convert(tmp_path, "byol", {"state_dict": byol_state_dict()}, "solo-learn", "--full")
    run = tmp_path / "run"
    main(["pretrain", "--method", "byol", "--init_from", str(byol_dir), *RUN, "--output_dir", str(run)])
    assert all(math.isfinite(x) for x in _losses(run))


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return " ".join(capsys.readouterr().err.split())


def test_another_methods_model_is_refused(mae_dir, tmp_path, capsys):
    err = _refused(
        ["pretrain", "--method", "dino", "--init_from", str(mae_dir), *RUN, "--output_dir", str(tmp_path)], capsys
    )
    assert "holds a mae pre-training model" in err
    assert "--method mae" in err


def test_an_encoder_export_is_refused(tmp_path, capsys):
    export = _convert(tmp_path, "mae_encoder", {"model": timm_vit_state_dict()}, "mae")
    err = _refused(
        ["pretrain", "--method", "mae", "--init_from", str(export), *RUN, "--output_dir", str(tmp_path / "r")], capsys
    )
    assert "encoder export" in err
    assert "--full" in err


def test_model_options_are_refused(mae_dir, tmp_path, capsys):
    argv = [
        "pretrain",
        "--method",
        "mae",
        "--init_from",
        str(mae_dir),
        "--mask_ratio",
        "0.5",
        "--backbone",
        "vit-small",
    ]
    err = _refused([*argv, *RUN, "--output_dir", str(tmp_path)], capsys)
    assert "--mask_ratio" in err
    assert "--backbone" in err


def test_resuming_an_existing_run_with_init_from_is_refused(mae_dir, mae_run, capsys):
    argv = ["pretrain", "--method", "mae", "--init_from", str(mae_dir), "--resume_from_checkpoint", "latest"]
    err = _refused([*argv, *RUN, "--output_dir", str(mae_run)], capsys)
    assert "drop --init_from" in err


def test_a_missing_folder_is_explained(tmp_path, capsys):
    err = _refused(["pretrain", "--method", "mae", "--init_from", str(tmp_path / "nowhere"), *RUN], capsys)
    assert "no config.json there" in err


def test_a_config_given_from_python_must_equal_the_folders(mae_dir):
    spec = METHODS["mae"]
    saved = read_init_config(spec, mae_dir)
    assert config_for_init(spec, None, mae_dir).to_dict() == saved.to_dict()
    assert config_for_init(spec, read_init_config(spec, mae_dir), mae_dir).mask_ratio == saved.mask_ratio
    changed = read_init_config(spec, mae_dir)
    changed.mask_ratio = 0.5
    with pytest.raises(ValueError, match=r"mask_ratio \(0.5 here, 0.75 in DIR\)"):
        config_for_init(spec, changed, mae_dir)
