"""The Accelerate loop: outputs, exact resume, atomic checkpoints, bad-input errors."""

import json

import pytest
import torch
from conftest import tiny_mae_config, tiny_training_args

from ssl_hf import get_method
from ssl_hf.training import NonFiniteLossError, pretrain
from ssl_hf.training import loop as loop_module
from ssl_hf.training.loop import find_latest_checkpoint


def _args(tmp_path, name="run", **overrides):
    return tiny_training_args(tmp_path / name, **overrides)


def _count_forwards(monkeypatch):
    """Counts training forward passes (to prove a resumed run did not silently start over)."""
    from ssl_hf.models.mae.modeling_mae import MAEForPreTraining

    real, calls = MAEForPreTraining.forward, []

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MAEForPreTraining, "forward", counting)
    return calls


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def test_run_writes_metrics_checkpoints_final_and_args(tmp_path):
    final = pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path))
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr", "images_seen"} <= r.keys() for r in records)
    assert records[0]["lr"] == pytest.approx(5e-4)  # linear warm-up: (0 + 1) / 2 * peak
    assert records[-1]["images_seen"] == 48
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_3", "step_6"]
    assert (final / "model.safetensors").is_file()
    assert (final / "config.json").is_file()
    saved = json.loads((run / "args.json").read_text())
    assert saved["method"] == "mae"
    assert saved["derived"]["global_batch_size"] == 8
    assert saved["model_config"]["backbone_config"]["patch_size"] == 8


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    spec, config = get_method("mae"), tiny_mae_config()
    pretrain(spec, config, _args(tmp_path, "full"))

    real_save = loop_module.save_checkpoint

    def save_then_die(accelerator, out, state, keep):
        path = real_save(accelerator, out, state, keep)
        if state["step"] == 3:
            raise KeyboardInterrupt("simulated kill after step 3")
        return path

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(spec, config, _args(tmp_path, "resumed"))
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    assert sorted(_losses(tmp_path / "resumed")) == [1, 2, 3]
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    forwards = _count_forwards(monkeypatch)
    pretrain(spec, config, _args(tmp_path, "resumed", resume_from_checkpoint="latest"))
    assert len(forwards) == 3  # steps 4..6 only
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert abs(full[step] - resumed[step]) <= 1e-6, (step, full[step], resumed[step])


def test_resume_crosses_an_epoch_boundary_exactly(tmp_path, monkeypatch):
    """20 images at batch 8 (drop_last) make 2 steps per epoch: the kill after step 4 lands on an epoch edge."""
    import datasets

    from ssl_hf.data import load_builtin

    small = load_builtin("digit-scenes").select(range(20))
    folder = tmp_path / "small"
    small.save_to_disk(str(folder))
    spec, config = get_method("mae"), tiny_mae_config()
    kwargs = dict(dataset=str(folder), save_steps=2)
    pretrain(spec, config, _args(tmp_path, "full", **kwargs))
    assert datasets.load_from_disk(str(folder)).num_rows == 20

    real_save = loop_module.save_checkpoint

    def save_then_die(accelerator, out, state, keep):
        path = real_save(accelerator, out, state, keep)
        if state["step"] == 4:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(spec, config, _args(tmp_path, "resumed", **kwargs))
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    forwards = _count_forwards(monkeypatch)
    pretrain(spec, config, _args(tmp_path, "resumed", resume_from_checkpoint="latest", **kwargs))
    assert len(forwards) == 2  # steps 5 and 6 only
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert max(abs(full[s] - resumed[s]) for s in (5, 6)) <= 1e-6


def test_kill_during_checkpoint_keeps_previous_checkpoint_loadable(tmp_path, monkeypatch):
    from accelerate import Accelerator

    real_save_state = Accelerator.save_state

    def partial_save(self, output_dir=None, **kwargs):
        if output_dir.endswith("step_6"):
            (loop_module.Path(output_dir) / "model.safetensors").write_bytes(b"half a file")
            raise KeyboardInterrupt("killed mid-checkpoint")
        return real_save_state(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", partial_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path))
    monkeypatch.setattr(Accelerator, "save_state", real_save_state)
    run = tmp_path / "run"
    assert find_latest_checkpoint(run).name == "step_3"
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    final = pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, resume_from_checkpoint="latest"))
    assert (final / "model.safetensors").is_file()
    assert find_latest_checkpoint(run).name == "step_6"
    assert not list((run / "checkpoints").glob(".tmp*"))


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    from ssl_hf.models.mae.modeling_mae import MAEForPreTraining

    real_forward = MAEForPreTraining.forward
    calls = {"n": 0}

    def nan_on_fifth(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MAEForPreTraining, "forward", nan_on_fifth)
    with pytest.raises(NonFiniteLossError, match=r"step 5.*last good checkpoint is .*step_3.*resume_from_checkpoint"):
        pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path))
    assert find_latest_checkpoint(tmp_path / "run").name == "step_3"


def test_existing_run_without_resume_is_refused(tmp_path):
    pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, max_steps=3))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    with pytest.raises(ValueError, match="resume_from_checkpoint latest"):
        pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, max_steps=3))


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, max_steps=2, gradient_accumulation_steps=2))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert records[-1]["images_seen"] == 32
    saved = json.loads((tmp_path / "run" / "args.json").read_text())
    assert saved["derived"]["global_batch_size"] == 16


def test_bf16_mixed_precision_trains(tmp_path):
    pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, max_steps=2, mixed_precision="bf16"))
    losses = _losses(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, mixed_precision="fp16"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"batch_size": 30000}, "fewer than one batch"), ({"max_steps": 0}, "max_steps")],
)
def test_bad_training_arguments(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, **overrides))


def test_resume_from_a_folder_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="not a complete ssl_hf checkpoint"):
        pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, resume_from_checkpoint=str(tmp_path)))


def test_worker_processes_give_the_same_run(tmp_path):
    """DataLoader workers decode and augment with the same per-sample seeds as the main process."""
    spec, config = get_method("mae"), tiny_mae_config()
    pretrain(spec, config, _args(tmp_path, "main", max_steps=2))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    pretrain(spec, config, _args(tmp_path, "workers", max_steps=2, num_workers=1))
    main, workers = _losses(tmp_path / "main"), _losses(tmp_path / "workers")
    assert main == workers


def _image_folder(root, n=24, corrupt=1):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / "train" / f"{i:03d}.png")
    for i in range(corrupt):
        (root / "train" / f"broken_{i}.png").write_bytes(b"\x89PNG not really")
    return root


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_files_are_skipped_and_counted_in_metrics(tmp_path, num_workers):
    """The count reaches metrics.jsonl also when DataLoader workers do the decoding."""
    folder = _image_folder(tmp_path / "images", n=15, corrupt=1)  # 16 files: 2 batches of 8 per epoch
    args = _args(tmp_path, dataset=str(folder), max_steps=2, save_steps=2, num_workers=num_workers)
    pretrain(get_method("mae"), tiny_mae_config(), args)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_images"] == 1
    assert records[-1]["images_seen"] == 15  # the corrupt file is dropped from its batch, not replaced


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_corrupt_file_is_counted_and_warned_about_once_and_summarised(tmp_path, num_workers, caplog):
    """Three epochs meet the broken file three times: one file, one warning, one summary at the end."""
    folder = _image_folder(tmp_path / "images", n=15, corrupt=1)  # 2 steps per epoch
    args = _args(tmp_path, dataset=str(folder), max_steps=6, save_steps=6, num_workers=num_workers)
    with caplog.at_level("WARNING"):
        pretrain(get_method("mae"), tiny_mae_config(), args)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["images_seen"] == 6 * 8 - 3  # left out of its batch in each of the 3 epochs
    assert records[-1]["skipped_images"] == 1
    broken = str(folder / "train" / "broken_0.png")
    warnings = [r.getMessage() for r in caplog.records if "broken_0.png" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"Skipping unreadable image {broken}: ")
    assert warnings[1].startswith("1 unreadable image(s) were left out of this run")
    listing = (tmp_path / "run" / "skipped_images.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listing] == [broken]


def test_streaming_parquet_source(tmp_path):
    from ssl_hf.data import load_builtin

    path = tmp_path / "scenes.parquet"
    load_builtin("digit-scenes").select(range(64)).to_parquet(str(path))
    pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, dataset=str(path), streaming=True, max_steps=3))
    records = _losses(tmp_path / "run")
    assert sorted(records) == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(v)) for v in records.values())


def test_a_stream_smaller_than_one_batch_stops_with_a_message(tmp_path):
    from ssl_hf.data import load_builtin

    path = tmp_path / "tiny.parquet"
    load_builtin("digit-scenes").select(range(5)).to_parquet(str(path))
    with pytest.raises(ValueError, match="smaller than one batch"):
        pretrain(get_method("mae"), tiny_mae_config(), _args(tmp_path, dataset=str(path), streaming=True))
