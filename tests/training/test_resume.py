"""`--resume_from_checkpoint` refuses another model, dataset or batch by name, and records harmless changes."""

import json

import pytest
from conftest import reset_accelerate, tiny_asl_config, tiny_mae_config, tiny_training_args

from ssl_hf import get_method
from ssl_hf.training import pretrain


@pytest.fixture(scope="module")
def three_step_run(tmp_path_factory):
    """A finished 3-step MAE run with its checkpoint `step_3`; each test resumes a copy of it."""
    root = tmp_path_factory.mktemp("resume")
    pretrain(get_method("mae"), tiny_mae_config(), tiny_training_args(root / "run", max_steps=3))
    reset_accelerate()
    return root / "run"


@pytest.fixture
def run(three_step_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(three_step_run, copy)
    return copy


def _resume(run, method="mae", config=None, **overrides):
    args = tiny_training_args(run, **{"max_steps": 3, "resume_from_checkpoint": "latest", **overrides})
    return pretrain(get_method(method), config or tiny_mae_config(), args)


def test_each_checkpoint_records_its_run(run):
    saved = json.loads((run / "checkpoints" / "step_3" / "training_args.json").read_text())
    assert saved["training"]["batch_size"] == 8
    assert saved["method"] == "mae"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"batch_size": 4}, "batch_size 8 -> 4"),
        ({"dataset": "digits"}, "dataset digit-scenes -> digits"),
        ({"seed": 1, "gradient_accumulation_steps": 2}, "gradient_accumulation_steps 1 -> 2, seed 0 -> 1"),
    ],
)
def test_another_dataset_or_batch_is_refused_by_name(run, overrides, named):
    with pytest.raises(ValueError, match="Cannot resume") as err:
        _resume(run, **overrides)
    assert named in str(err.value)
    assert "another --output_dir" in str(err.value)


def test_another_architecture_is_refused_before_loading_the_state(run):
    wider = tiny_mae_config(backbone={"hidden_size": 64}, decoder_hidden_size=24)
    with pytest.raises(ValueError, match="Cannot resume") as err:
        _resume(run, config=wider)
    message = str(err.value)
    assert "backbone_config.hidden_size 32 -> 64" in message
    assert "decoder_hidden_size 16 -> 24" in message
    assert "size mismatch" not in message


def test_another_method_is_refused(run):
    with pytest.raises(ValueError, match="method mae -> asl"):
        _resume(run, method="asl", config=tiny_asl_config())


def test_harmless_changes_continue_and_are_recorded(run, caplog):
    with caplog.at_level("WARNING", logger="ssl_hf"):
        final = _resume(run, max_steps=4, save_steps=2, eval_max_images=100)
    assert (final / "model.safetensors").is_file()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    record = json.loads((run / "args.json").read_text())
    assert record["training"]["max_steps"] == 4
    (resume,) = record["resumes"]
    assert resume["checkpoint"].endswith("step_3")
    assert resume["changed"] == {"max_steps": [3, 4], "save_steps": [3, 2], "eval_max_images": [5000, 100]}
    assert "max_steps 3 -> 4" in caplog.text
    # the history travels with the next checkpoint and the final model
    assert json.loads((run / "checkpoints" / "step_4" / "training_args.json").read_text())["resumes"] == [resume]
    assert json.loads((final / "training_args.json").read_text())["resumes"] == [resume]
