"""`ssl-hf pretrain` options as a Hugging Face user types them: presets without --method, --method in capitals,
epochs, logging steps, trackers, the data-sized default backbone, and the top-level --help / --version."""

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
