"""`ssl-hf pretrain` options as a Hugging Face user types them: presets without --method, --method in capitals,
epochs, logging steps, trackers, the data-sized default backbone, and the top-level --help / --version."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ssl_hf
from ssl_hf.cli import main


def _error(argv: list[str], capsys) -> str:
    """The one-line error of a refused command line (exit code 2)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


# ------------------------------------------------------------------------------------------- method and preset


@pytest.mark.parametrize(
    ("method", "preset"), [(m, p) for m, spec in sorted(ssl_hf.METHODS.items()) for p in spec.presets]
)
def test_a_preset_alone_picks_its_method(no_training, method, preset):
    main(["pretrain", "--preset", preset])
    assert no_training[-1][0].name == method


def test_method_is_case_insensitive(no_training):
    main(["pretrain", "--method", "MAE"])
    main(["pretrain", "--method", "Byol", "--preset", "byol-resnet18-stl10"])
    assert [spec.name for spec, _, _ in no_training] == ["mae", "byol"]


def test_method_and_preset_that_disagree_are_both_named(no_training, capsys):
    err = _error(["pretrain", "--method", "mae", "--preset", "byol-resnet18-stl10"], capsys)
    assert "--method mae and --preset byol-resnet18-stl10 disagree" in err
    assert "a preset of byol" in err
    assert not no_training


def test_unknown_preset_is_not_blamed_on_a_method(no_training, capsys):
    err = _error(["pretrain", "--preset", "byol-resnet18-stl"], capsys)
    assert "Unknown preset 'byol-resnet18-stl'" in err
    assert "for mae" not in err
    assert "byol-resnet18-stl10" in err  # the closest name
    assert not no_training


# ------------------------------------------------------------------------------------------- epochs and logging


def test_num_train_epochs_becomes_max_steps_and_logging_steps_average(tmp_path, caplog):
    """10 images at batch 4: 2 optimiser steps per epoch, so 1.5 epochs are 3 steps; metrics every 2 steps + last."""
    import json
    import logging

    from conftest import tiny_mae_config, tiny_training_args, write_square_folders

    from ssl_hf.training import pretrain

    data = write_square_folders(tmp_path / "squares", {"a": 40, "b": 200}, 5, 10)
    args = tiny_training_args(
        tmp_path / "run", dataset=str(data / "train"), batch_size=4, max_steps=None, num_train_epochs=1.5
    )
    args.logging_steps = 2
    with caplog.at_level(logging.INFO, logger="ssl_hf"):
        pretrain(ssl_hf.get_method("mae"), tiny_mae_config(), args)
    record = json.loads((tmp_path / "run" / "args.json").read_text())
    assert (record["training"]["max_steps"], record["derived"]["steps_per_epoch"]) == (3, 2)
    assert "--num_train_epochs 1.5: 3 optimiser steps" in caplog.text
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 3]
    assert all(line["loss"] > 0 for line in lines)


def test_num_train_epochs_and_max_steps_that_disagree_are_refused(tmp_path):
    from conftest import tiny_mae_config, tiny_training_args

    from ssl_hf.training import pretrain

    args = tiny_training_args(tmp_path / "run", max_steps=5, num_train_epochs=1)  # digit-scenes: 1000 steps
    with pytest.raises(ValueError, match=r"--num_train_epochs 1 gives 1000 optimiser steps .* --max_steps is 5"):
        pretrain(ssl_hf.get_method("mae"), tiny_mae_config(), args)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_num_train_epochs_of_a_stream_is_refused(tmp_path):
    from conftest import tiny_training_args

    args = tiny_training_args(tmp_path / "run", max_steps=None, num_train_epochs=1, streaming=True)
    with pytest.raises(ValueError, match="streaming dataset has no length"):
        args.resolved({}).validate()


def test_num_train_epochs_flag_replaces_a_presets_max_steps(no_training):
    main(["pretrain", "--preset", "mae-cpu", "--num_train_epochs", "2", "--logging_steps", "10"])
    _, _, args = no_training[-1]
    assert (args.num_train_epochs, args.max_steps, args.logging_steps) == (2, None, 10)
    main(["pretrain", "--preset", "mae-cpu"])
    assert no_training[-1][2].max_steps == ssl_hf.get_method("mae").presets["mae-cpu"]["max_steps"]


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["pretrain", "--num-train-epochs", "2"], "--num_train_epochs"),
        (["pretrain", "--per_device_train_batch_size", "8"], "--batch_size"),
        (["pretrain", "--loging_steps", "5"], "--logging_steps"),
        (["evaluate", "some/export", "--protcol", "knn"], "--protocol"),
        (["export", "run/final", "--output_dir", "x", "--repoid", "a/b"], "--repo_id"),
        (["push", "export", "--repo-id", "a/b"], "--repo_id"),
        (["convert", "x.pth", "--from", "mae", "--output_dir", "o", "--image-size", "32"], "--image_size"),
    ],
)
def test_unknown_flag_suggests_the_closest_one(no_training, capsys, argv, suggestion):
    err = _error(argv, capsys)
    assert "unknown option" in err
    assert f"did you mean {suggestion}" in err


# ------------------------------------------------------------------------------------------- trackers


def _without(modules, monkeypatch):
    """Simulates an environment where none of `modules` is installed."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_report_to_a_missing_tracker_fails_before_training_with_the_install_command(tmp_path, capsys, monkeypatch):
    _without({"tensorboard", "tensorboardX"}, monkeypatch)
    run = tmp_path / "run"
    err = _error(["pretrain", "--report_to", "tensorboard", "--max_steps", "1", "--output_dir", str(run)], capsys)
    assert "--report_to tensorboard needs the tensorboard package" in err
    assert "pip install 'ssl_hf[tensorboard]'" in err
    assert not run.exists()  # nothing trained, nothing written


def test_report_to_names_unknown_trackers_and_passes_installed_ones(tmp_path, monkeypatch):
    import importlib.util

    from conftest import tiny_training_args

    with pytest.raises(ValueError, match="unknown tracker 'tensorbord'"):
        tiny_training_args(tmp_path, report_to="tensorbord").resolved({}).validate()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real("json" if name == "wandb" else name, *a))
    tiny_training_args(tmp_path, report_to="wandb").resolved({}).validate()  # installed: no error
    _without({"wandb"}, monkeypatch)
    with pytest.raises(ValueError, match=r"pip install 'ssl_hf\[wandb\]'"):
        tiny_training_args(tmp_path, report_to="wandb").resolved({}).validate()


# ------------------------------------------------------------------------------------------- help and version


def _console(*args: str) -> subprocess.CompletedProcess:
    """Runs the installed `ssl-hf` console script under `python -X importtime` (the modules it imports on stderr)."""
    script = Path(sys.executable).parent / "ssl-hf"
    return subprocess.run(
        [sys.executable, "-X", "importtime", str(script), *args], capture_output=True, text=True, timeout=120
    )


def test_top_level_help_lists_the_commands_and_version_prints_it_without_torch():
    done = _console("--help")
    assert done.returncode == 0
    for command in ("pretrain", "export", "evaluate", "push", "convert"):
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(command + " "))
        assert len(line.split()) > 4, line  # a one-line description
    assert "--version" in done.stdout
    version = _console("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"ssl-hf {ssl_hf.__version__}"
    for run in (done, version):
        imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time")}
        assert not {"torch", "transformers", "datasets"} & imported


def _help_entries(argv: list[str], capsys) -> dict[str, str]:
    """`ssl-hf ... --help` as {option: its help text, wrapped lines joined}."""
    import re

    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = capsys.readouterr().out.split("options:", 1)[1]
    entries = re.split(r"\n(?=  --?\w)", text)
    return {e.split()[0].rstrip(","): " ".join(e.split()) for e in entries if e.strip().startswith("-")}


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain"],
        ["pretrain", "--method", "byol"],
        ["pretrain", "--preset", "dino-cpu"],
        ["export"],
        ["evaluate"],
        ["push"],
        ["convert"],
    ],
)
def test_every_flag_has_a_help_text_with_its_default(capsys, argv):
    entries = _help_entries(argv, capsys)
    assert len(entries) > 5
    missing = [
        option for option, text in entries.items() if option != "-h" and not re.search(r"default|required", text)
    ]
    assert not missing, missing
    if argv[0] == "pretrain":
        assert "when omitted" not in entries["--save_total_limit"]  # was: "all when omitted (default: 2)"
        assert "default: 2" in entries["--save_total_limit"]
        assert "Projector hidden width" in entries.get("--proj_hidden_dim", "Projector hidden width")


# ------------------------------------------------------------------------------------------- default backbone


def test_builtin_data_gets_a_backbone_of_its_size_and_says_so(no_training, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="ssl_hf"):
        main(["pretrain", "--method", "mae"])
        main(["pretrain", "--method", "byol", "--dataset", "digits"])
    (_, mae, _), (_, byol, _) = no_training
    vit = mae.backbone_config
    assert (vit.hidden_size, vit.num_hidden_layers, vit.image_size, vit.patch_size) == (192, 6, 32, 8)
    assert (mae.decoder_hidden_size, mae.decoder_num_hidden_layers, mae.mask_ratio) == (128, 2, 0.75)
    assert byol.backbone_config.model_type == "ssl_resnet_small_stem"
    assert (byol.backbone_config.hidden_sizes, byol.image_size) == ([16, 32, 64, 128], 32)
    assert "digit-scenes holds 32x32 images: mae defaults to the mae-cpu recipe's architecture" in caplog.text
    assert "--backbone or --preset" in caplog.text


@pytest.mark.parametrize(
    "flags",
    [["--backbone", "vit-base"], ["--preset", "mae-vitb16"], ["--dataset", "ILSVRC/imagenet-1k"]],
)
def test_paper_backbone_with_a_preset_an_explicit_backbone_or_other_data(no_training, flags):
    main(["pretrain", "--method", "mae", *flags])
    config = no_training[-1][1]
    assert (config.backbone_config.hidden_size, config.backbone_config.image_size) == (768, 224)
    assert config.decoder_hidden_size == 512


def test_data_sized_default_runs_every_method_for_a_step(tmp_path):
    """The data-sized defaults of each method build and train (one step, batch 4)."""
    for method in ("mae", "asl", "byol", "msbreg", "dino", "selfpatch"):
        out = str(tmp_path / method)
        main(["pretrain", "--method", method, "--max_steps", "1", "--batch_size", "4", "--output_dir", out])
        assert (tmp_path / method / "final" / "config.json").is_file()


# ------------------------------------------------------------------------------------------- Python API


def _tiny_images(n: int, seed: int = 0):
    """An in-memory `datasets.Dataset` of `n` random 32x32 RGB PIL images with labels 0/1."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    return datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]}, features=features)


def _python_api_example() -> str:
    """The code of the example in docs/python_api.md (the first ```python block)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "python_api.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_python_api_example_runs_on_an_in_memory_dataset(tmp_path, monkeypatch):
    """The docs example, with a tiny in-memory Dataset as `images` and 2 steps instead of its 200."""
    import json

    code = _python_api_example()
    assert "images = " in code
    assert "max_steps=200" in code
    code = code.replace("max_steps=200", "max_steps=2").replace("batch_size=64", "batch_size=4")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.split("images = ", 1)[0], "python_api.md", "exec"), namespace)  # the imports
    namespace["images"] = _tiny_images(12)
    exec(compile("\n".join(code.split("images = ", 1)[1].splitlines()[1:]), "python_api.md", "exec"), namespace)
    final = namespace["final"]
    assert (final / "config.json").is_file()
    record = json.loads((final / "training_args.json").read_text())
    assert record["training"]["dataset"].startswith("in-memory Dataset (12 rows, fingerprint ")
    assert [json.loads(line)["step"] for line in (final.parent / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_dataset_dict_trains_on_its_split_and_feeds_the_online_knn(tmp_path):
    import datasets
    from conftest import tiny_mae_config, tiny_training_args

    from ssl_hf.training import TrainingArguments, pretrain

    splits = datasets.DatasetDict({"train": _tiny_images(8), "test": _tiny_images(6, seed=1)})
    args = tiny_training_args(tmp_path / "run", dataset=splits, batch_size=4, max_steps=1)
    args.eval_dataset, args.eval_every = splits, 1
    final = pretrain(ssl_hf.get_method("mae"), tiny_mae_config(), args)
    assert "knn_top1" in (final.parent / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="eval_dataset needs a train and a test split"):
        TrainingArguments(eval_dataset=_tiny_images(4), eval_every=5).resolved({}).validate()
    with pytest.raises(ValueError, match="has no split 'validation'"):
        pretrain(
            ssl_hf.get_method("mae"),
            tiny_mae_config(),
            tiny_training_args(tmp_path / "r2", dataset=splits, train_split="validation"),
        )


def test_an_integer_given_to_a_float_field_is_a_float(no_training, tmp_path):
    """`--pred_lr_scale 10` or `ema_base: 1` in a --config file: the strict config would refuse the int."""
    config = tmp_path / "byol.yaml"
    config.write_text("method: byol\nema_base: 1\n")
    main(["pretrain", "--config", str(config), "--pred_lr_scale", "10"])
    byol = no_training[-1][1]
    assert (byol.pred_lr_scale, byol.ema_base) == (10.0, 1.0)
    assert type(byol.pred_lr_scale) is float
    assert type(byol.ema_base) is float
