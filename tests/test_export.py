"""Export: the MAE encoder becomes a stock transformers model (ViTModel / Dinov2Model) + processor + model card."""

import json
import textwrap

import numpy as np
import pytest
import torch
from conftest import run_in_fresh_process, tiny_mae_config
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoModel, Dinov2Backbone, Dinov2Model, ViTModel

from ssl_hf import MAEForPreTraining
from ssl_hf.cards import update_card
from ssl_hf.data.views import EvalView
from ssl_hf.export import export_pretrained


RESULTS = {
    "results": [
        {
            "protocol": "knn",
            "dataset": "digits",
            "settings": "k=20",
            "top1": 0.5,
            "top5": 0.9,
            "backbone": "pretrained",
        }
    ]
}


def _trained_mae(**overrides) -> MAEForPreTraining:
    """A tiny MAE whose weights are no longer init values (noise on every trainable tensor)."""
    torch.manual_seed(0)
    model = MAEForPreTraining(tiny_mae_config(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(in-process MAE, its `final/` folder, its ViT export folder)."""
    root = tmp_path_factory.mktemp("export")
    model = _trained_mae()
    model.save_pretrained(root / "final")
    out = export_pretrained(root / "final", root / "export")
    return model, root / "final", out


@pytest.fixture(scope="module")
def dinov2_pair(tmp_path_factory):
    """A tiny MAE with MLP 4x wide (dinov2 needs an integer mlp_ratio), exported in both formats."""
    root = tmp_path_factory.mktemp("dinov2")
    model = _trained_mae(backbone={"intermediate_size": 128})
    return model, export_pretrained(model, root / "vit"), export_pretrained(model, root / "dinov2", "dinov2")


def test_export_writes_stock_vit_files(exported):
    _, _, out = exported
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit"
    assert config["architectures"] == ["ViTModel"]
    assert config["image_size"] == 32
    assert config["patch_size"] == 8
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32}


def test_exported_weights_are_the_trained_encoder(exported):
    model, _, out = exported
    loaded, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert isinstance(loaded, ViTModel)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.backbone(pixels).last_hidden_state
        got = loaded.eval()(pixel_values=pixels)
    torch.testing.assert_close(got.last_hidden_state, expected, atol=1e-5, rtol=0)
    # the identity pooler: pooler_output = tanh(cls)
    torch.testing.assert_close(got.pooler_output, torch.tanh(got.last_hidden_state[:, 0]), atol=1e-6, rtol=0)


_SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModel, pipeline

    export, work = sys.argv[1], sys.argv[2]
    model, info = AutoModel.from_pretrained(export, output_loading_info=True)
    x = torch.from_numpy(np.load(work + "/x.npy"))
    with torch.no_grad():
        np.save(work + "/cls.npy", model.eval()(pixel_values=x).last_hidden_state[:, 0].numpy())
    extractor = pipeline("image-feature-extraction", model=export)
    features = np.asarray(extractor(Image.open(work + "/image.png")), dtype=np.float32)
    np.save(work + "/pipeline.npy", features)
    print(json.dumps({
        "class": type(model).__name__,
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "ssl_hf_imported": any(m == "ssl_hf" or m.startswith("ssl_hf.") for m in sys.modules),
        "finite": bool(np.isfinite(features).all()),
    }))
    """
)


def test_export_loads_with_plain_transformers_in_a_fresh_process(exported, tmp_path):
    model, _, out = exported
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    np.save(tmp_path / "x.npy", x.numpy())
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    report = run_in_fresh_process(_SUBPROCESS, str(out), str(tmp_path), cwd=tmp_path, timeout=120)
    assert report == {
        "class": "ViTModel",
        "missing": [],
        "unexpected": [],
        "ssl_hf_imported": False,
        "finite": True,
    }
    with torch.no_grad():
        expected = model.backbone(x).last_hidden_state[:, 0]
    cls = torch.from_numpy(np.load(tmp_path / "cls.npy"))
    assert (cls - expected).abs().max().item() < 1e-5
    # the saved processor matches ssl_hf's evaluation view (same size: rescale + normalise only)
    features = torch.from_numpy(np.load(tmp_path / "pipeline.npy"))
    assert features.shape == (1, 1 + 16, 32)
    view = EvalView(32)([torch.from_numpy(pixels).permute(2, 0, 1)])
    with torch.no_grad():
        ours = model.backbone(view["pixel_values"]).last_hidden_state
    assert (features - ours).abs().max().item() < 1e-4


def test_dinov2_export_matches_vit_export(dinov2_pair):
    model, vit_dir, dinov2_dir = dinov2_pair
    assert json.loads((dinov2_dir / "config.json").read_text())["model_type"] == "dinov2"
    dinov2, info = AutoModel.from_pretrained(dinov2_dir, output_loading_info=True)
    assert isinstance(dinov2, Dinov2Model)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    vit = AutoModel.from_pretrained(vit_dir).eval()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = vit(pixel_values=pixels).last_hidden_state
        b = dinov2.eval()(pixel_values=pixels).last_hidden_state
        c = model.backbone(pixels).last_hidden_state
    assert (a - b).abs().max().item() < 1e-5
    assert (b - c).abs().max().item() < 1e-5


def test_dinov2_export_loads_as_backbone(dinov2_pair):
    _, _, dinov2_dir = dinov2_pair
    backbone = Dinov2Backbone.from_pretrained(dinov2_dir, out_indices=[1, 2]).eval()
    with torch.no_grad():
        maps = backbone(pixel_values=torch.randn(2, 3, 32, 32)).feature_maps
    assert len(maps) == 2
    assert all(m.shape == (2, 32, 4, 4) for m in maps)
    assert not torch.allclose(maps[0], maps[1])  # two different depths


def test_dinov2_export_rejects_non_integer_mlp_ratio(tmp_path):
    model = _trained_mae()  # intermediate_size 37, hidden 32
    with pytest.raises(ValueError, match="multiple of hidden_size"):
        export_pretrained(model, tmp_path / "out", "dinov2")


def test_model_card_front_matter(exported):
    _, _, out = exported
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.library_name == "transformers"
    assert "ssl_hf" in card.data.tags
    assert "mae" in card.data.tags
    assert "Masked Autoencoders" in card.text  # the method's yaml reached the template
    assert "Not evaluated yet" in card.text
    assert "{{" not in card.text  # every template variable was filled


def test_model_card_with_results(tmp_path):
    out = export_pretrained(_trained_mae(), tmp_path / "export", results=RESULTS, repo_id="me/tiny-mae")
    text = (out / "README.md").read_text()
    assert "| pretrained | knn (k=20) | digits | 50.00 % | 90.00 % |" in text
    assert 'from_pretrained("me/tiny-mae")' in text


def test_update_card_rewrites_readme_with_results(tmp_path):
    model = _trained_mae()
    out = export_pretrained(model, tmp_path / "export", repo_id="me/tiny-mae")
    weights = (out / "model.safetensors").read_bytes()
    assert "0.9000" not in (out / "README.md").read_text()
    update_card(out, RESULTS)
    text = (out / "README.md").read_text()
    assert "| pretrained | knn (k=20) | digits | 50.00 % | 90.00 % |" in text
    assert (out / "model.safetensors").read_bytes() == weights
    card = ModelCard.load(out / "README.md")
    # the method and repo id survive an export without training_args.json
    assert "mae" in card.data.tags
    assert "Masked Autoencoders" in card.text
    assert 'from_pretrained("me/tiny-mae")' in text


def test_export_from_folder_without_config_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json.*final/"):
        export_pretrained(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_card_names_a_stride_2_first_stage():
    """A ResNet whose first stage downsamples (the msbreg-cpu / dino-cpu backbones) says so in its card."""
    from ssl_hf.backbones import SmallStemResNetConfig, SmallStemResNetModel
    from ssl_hf.cards import render_card

    fields = dict(hidden_sizes=[4, 4, 4, 4], embedding_size=4, depths=[1, 1, 1, 1], layer_type="basic")
    texts = [
        str(
            render_card(
                SmallStemResNetModel(SmallStemResNetConfig(**fields, downsample_in_first_stage=ds)),
                "msbreg",
                None,
                None,
                "org/m",
                image_size=32,
            )
        )
        for ds in (True, False)
    ]
    assert "first stage stride 2" in texts[0]
    assert "first stage stride 2" not in texts[1]
