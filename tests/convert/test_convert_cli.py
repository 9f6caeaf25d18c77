"""`ssl-hf convert` on the command line: bad inputs, help, and a fresh-process load with plain transformers."""

import fractions
import textwrap

import numpy as np
import pytest
import torch
from conftest import run_in_fresh_process
from official_checkpoints import (
    timm_vit_forward,
    timm_vit_state_dict,
    torchvision_resnet_forward,
    torchvision_resnet_state_dict,
)
from PIL import Image

import ssl_hf.convert.encoder
from ssl_hf.cli import main


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit") / "mae_pretrain_vit_tiny4.pth"
    torch.save({"model": timm_vit_state_dict()}, path)
    return path


def _refused(checkpoint, source_format, tmp_path, capsys) -> str:
    """Runs `ssl-hf convert` into `tmp_path/out`: exit code 2, and nothing left (no output, no temporary sibling)."""
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(checkpoint), "--from", source_format, "--output_dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))
    return capsys.readouterr().err


def _saved(tmp_path, obj, name="x.pth"):
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def test_wrong_format_names_the_formats_that_fit(vit_file, tmp_path, capsys):
    err = _refused(vit_file, "torchvision-resnet", tmp_path, capsys)
    assert "holds no torchvision ResNet encoder" in err
    assert "--from mae" in err
    assert "--from dino" in err


def test_unknown_format_is_an_argument_error(vit_file, tmp_path, capsys):
    assert "invalid choice: 'simclr'" in _refused(vit_file, "simclr", tmp_path, capsys)


def test_unknown_layout_lists_keys_and_formats(tmp_path, capsys):
    unknown = {"encoder.layers.0.weight": torch.zeros(2), "encoder.layers.1.weight": torch.zeros(2)}
    err = _refused(_saved(tmp_path, unknown), "mae", tmp_path, capsys)
    assert "encoder.layers.0.weight" in err
    assert "No supported format fits it" in err
    assert "torchvision-resnet" in err  # the formats that were tried


def test_truncated_file(vit_file, tmp_path, capsys):
    data = vit_file.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert "truncated" in _refused(tmp_path / "cut.pth", "mae", tmp_path, capsys)


def test_missing_file(tmp_path, capsys):
    assert "No checkpoint file" in _refused(tmp_path / "nope.pth", "dino", tmp_path, capsys)


def test_missing_keys_are_named(tmp_path, capsys):
    sd = timm_vit_state_dict()
    del sd["blocks.1.mlp.fc2.weight"]
    assert "missing blocks.1.mlp.fc2.weight" in _refused(_saved(tmp_path, sd), "dino", tmp_path, capsys)


def test_unknown_encoder_keys_stop_the_conversion(tmp_path, capsys):
    sd = timm_vit_state_dict()
    sd["blocks.0.ls1.gamma"] = torch.ones(192)  # layer scale: a ViTModel has none, it would be lost
    assert "blocks.0.ls1.gamma" in _refused(_saved(tmp_path, sd), "timm-vit", tmp_path, capsys)


def test_files_that_need_more_than_weights_only_are_refused(tmp_path, capsys):
    pickled = {"state_dict": timm_vit_state_dict(), "hparams": fractions.Fraction(1, 3)}
    err = _refused(_saved(tmp_path, pickled, "pickled.ckpt"), "ibot", tmp_path, capsys)
    assert "weights_only=True" in err
    assert "re-save" in err


def test_a_non_empty_output_dir_is_left_alone(vit_file, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["convert", str(vit_file), "--from", "mae", "--output_dir", str(tmp_path / "out")])
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_a_failure_while_writing_leaves_nothing(vit_file, tmp_path, monkeypatch, capsys):
    def broken_card(*args, **kwargs):
        raise ValueError("simulated failure while writing the card")

    monkeypatch.setattr(ssl_hf.convert.encoder, "render_card", broken_card)
    assert "simulated failure" in _refused(vit_file, "mae", tmp_path, capsys)


def test_help_gives_every_flag_and_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = ("--from", "--output_dir", "--num_attention_heads", "--image_size", "--repo_id", "--full")
    for flag in (*flags, "--decoder_num_attention_heads"):
        assert flag in text
    assert text.count("default: None") == 4
    assert "192 -> 3" in text


_SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModel, pipeline

    work = sys.argv[1]
    x = torch.from_numpy(np.load(work + "/x.npy"))
    report = {}
    for name in ("vit", "selfpatch", "resnet"):
        model, info = AutoModel.from_pretrained(work + "/" + name, output_loading_info=True)
        with torch.no_grad():
            out = model.eval()(pixel_values=x)
        features = out.pooler_output.flatten(1) if name == "resnet" else out.last_hidden_state
        np.save(f"{work}/{name}.npy", features.numpy())
        extracted = np.asarray(pipeline("image-feature-extraction", model=work + "/" + name)(Image.open(work + "/image.png")))
        report[name] = [type(model).__name__, sorted(info["missing_keys"]), sorted(info["unexpected_keys"]), bool(np.isfinite(extracted).all())]
    report["ssl_hf_imported"] = any(m == "ssl_hf" or m.startswith("ssl_hf.") for m in sys.modules)
    print(json.dumps(report))
    """
)


def test_exports_load_with_plain_transformers_in_a_fresh_process(tmp_path):
    vit = timm_vit_state_dict()
    selfpatch = timm_vit_state_dict(cls=False, final_norm=False, seed=1)  # SelfPatch backbones have no norm
    resnet = torchvision_resnet_state_dict(bottleneck=True)
    for name, sd, fmt in (
        ("vit", vit, "dino"),
        ("selfpatch", selfpatch, "selfpatch"),
        ("resnet", resnet, "torchvision-resnet"),
    ):
        torch.save(sd, tmp_path / f"{name}.pth")
        extra = ["--image_size", "32"] if name == "resnet" else []
        main(["convert", str(tmp_path / f"{name}.pth"), "--from", fmt, "--output_dir", str(tmp_path / name), *extra])
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    report = run_in_fresh_process(_SUBPROCESS, str(tmp_path), cwd=tmp_path)
    assert report == {
        "vit": ["ViTModel", [], [], True],
        "selfpatch": ["SiglipVisionModel", [], [], True],
        "resnet": ["ResNetModel", [], [], True],
        "ssl_hf_imported": False,
    }
    expected = {
        "vit": timm_vit_forward(vit, x, num_heads=3),
        "selfpatch": torch.nn.functional.layer_norm(
            timm_vit_forward(selfpatch, x, num_heads=3, apply_norm=False), (192,), eps=1e-6
        ),
        "resnet": torchvision_resnet_forward(resnet, x),
    }
    for name, features in expected.items():
        got = torch.from_numpy(np.load(tmp_path / f"{name}.npy"))
        assert (got - features).abs().max().item() < 1e-5, name


def test_the_nine_formats_of_the_issue():
    from ssl_hf.convert import FORMATS

    expected = ["mae", "dino", "ibot", "tec", "selfpatch", "timm-vit", "torchvision-resnet", "solo-learn", "lightly"]
    assert list(FORMATS) == expected
