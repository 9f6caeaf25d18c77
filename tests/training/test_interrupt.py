"""Ctrl-C / SIGTERM during pre-training: the step finishes, a checkpoint is saved, resuming loses no step."""

import json
import os
import signal

import pytest
import yaml
from conftest import TINY_MODEL, reset_accelerate, tiny_mae_config, tiny_training_args

from ssl_hf import get_method
from ssl_hf.cli import main
from ssl_hf.models.mae.modeling_mae import MAEForPreTraining
from ssl_hf.training import TrainingInterrupted, pretrain


class DefaultHandlerReached(Exception):
    """Raised by the test's own SIGTERM handler: the signal was not handled by the training loop."""


@pytest.fixture
def sigterm_guard():
    """A SIGTERM handler that raises instead of killing pytest; checks that training restores it afterwards."""

    def guard(signum, frame):
        raise DefaultHandlerReached(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, guard)
    yield guard
    assert signal.getsignal(signal.SIGTERM) is guard  # the loop put the previous handler back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGTERM, previous)


def _signal_during_forward(monkeypatch, signum: int, at_forward: int) -> None:
    """Sends `signum` to this process in the middle of the `at_forward`-th training forward pass."""
    real, calls = MAEForPreTraining.forward, []

    def forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == at_forward:
            os.kill(os.getpid(), signum)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MAEForPreTraining, "forward", forward)


def _losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_the_step_and_resume_loses_nothing(tmp_path, monkeypatch, sigterm_guard, signum):
    spec, config = get_method("mae"), tiny_mae_config()
    pretrain(spec, config, tiny_training_args(tmp_path / "full", max_steps=4))
    reset_accelerate()

    _signal_during_forward(monkeypatch, signum, at_forward=2)  # save_steps is 3: step 2 is not a scheduled save
    with pytest.raises(KeyboardInterrupt) as info:
        pretrain(spec, config, tiny_training_args(tmp_path / "run", max_steps=4))
    err = info.value
    assert isinstance(err, TrainingInterrupted)
    assert (err.signal_name, err.step, err.exit_code) == (signum.name, 2, 128 + signum)
    assert err.checkpoint == tmp_path / "run" / "checkpoints" / "step_2"
    assert "--resume_from_checkpoint latest" in str(err)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_2"]
    assert sorted(_losses(tmp_path / "run")) == [1, 2]  # the step in progress when the signal came was completed
    assert not (tmp_path / "run" / "final").exists()
    reset_accelerate()

    monkeypatch.undo()
    pretrain(spec, config, tiny_training_args(tmp_path / "run", max_steps=4, resume_from_checkpoint="latest"))
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "run")
    assert sorted(resumed) == [1, 2, 3, 4]
    assert max(abs(full[s] - resumed[s]) for s in full) <= 1e-6


def test_cli_prints_one_line_with_the_resume_command(tmp_path, monkeypatch, sigterm_guard, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "training": {"batch_size": 8, "max_steps": 5}}))
    argv = ["pretrain", "--config", str(config), "--output_dir", str(tmp_path / "run")]
    _signal_during_forward(monkeypatch, signal.SIGTERM, at_forward=1)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 143
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("ssl-hf pretrain:")]
    assert "Traceback" not in err
    assert (
        f"stopped by SIGTERM after step 1; checkpoint saved to {tmp_path / 'run' / 'checkpoints' / 'step_1'}" in line
    )
    command = f"ssl-hf pretrain --config {config} --output_dir {tmp_path / 'run'} --resume_from_checkpoint latest"
    assert line.endswith(f"Resume with: {command}")
    reset_accelerate()

    monkeypatch.undo()
    main(command.split()[1:])
    assert sorted(_losses(tmp_path / "run")) == [1, 2, 3, 4, 5]
