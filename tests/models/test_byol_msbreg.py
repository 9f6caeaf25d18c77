"""BYOL and MSBReg: losses by hand, K = 2 equivalence, the EMA target, the regularisers, and LayerNorm collapse."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_byol_config, tiny_msbreg_config
from transformers import AutoModel, ResNetModel, ViTModel

from ssl_hf import BYOLForPreTraining, MSBRegForPreTraining, backbone_config, get_method
from ssl_hf.evaluation.diagnostics import effective_rank, embedding_std
from ssl_hf.export import export_pretrained
from ssl_hf.losses.embedding import brownian_loss, byol_loss, multiview_centroid_loss, singular_value_loss
from ssl_hf.models.byol import cosine_momentum
from ssl_hf.training import TrainingArguments, pretrain


def _views(batch=4, k=2, seed=0):
    return torch.randn(batch, k, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- losses


def test_byol_loss_is_two_minus_two_cosine_by_hand():
    p1, z2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])  # cos 45 deg = 1/sqrt(2)
    p2, z1 = torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, -2.0]])  # opposite: cos = -1
    expected_terms = (2 - 2 / math.sqrt(2), 2 - 2 * -1.0)
    assert byol_loss(p1, p2, z1, z2, "sum").item() == pytest.approx(sum(expected_terms))
    assert byol_loss(p1, p2, z1, z2).item() == pytest.approx(sum(expected_terms) / 2)


def test_msbreg_with_two_views_and_no_regularisers_equals_byol():
    torch.manual_seed(0)
    msbreg = MSBRegForPreTraining(tiny_msbreg_config(num_views=2, lambda_s=0.0, lambda_b=0.0))
    byol = BYOLForPreTraining(tiny_byol_config())
    assert not byol.load_state_dict(msbreg.state_dict(), strict=True).missing_keys
    views = _views()
    out_m, out_b = msbreg(views), byol(views)
    torch.testing.assert_close(out_m.loss, out_b.loss, atol=1e-6, rtol=0)
    out_m.loss.backward()
    out_b.loss.backward()
    for (name, pm), pb in zip(msbreg.named_parameters(), byol.parameters()):
        if pm.grad is not None:
            torch.testing.assert_close(pm.grad, pb.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert out_m.loss_singular is None
    assert out_m.loss_brownian is None


def test_centroid_modes():
    P, Z = torch.randn(4, 8, 16), torch.randn(4, 8, 16)
    loo = multiview_centroid_loss(P, Z)
    manual = torch.stack(
        [
            2 - 2 * F.cosine_similarity(P[k], sum(Z[j] / Z[j].norm(dim=-1, keepdim=True) for j in range(4) if j != k))
            for k in range(4)
        ]
    ).mean()
    torch.testing.assert_close(loo, manual)
    assert multiview_centroid_loss(Z, Z, "centroid_to_centroid").item() == pytest.approx(0.0, abs=1e-6)
    assert multiview_centroid_loss(P, Z, "all_views").item() != loo.item()


@pytest.mark.parametrize("kind", ["nuclear", "log", "whitening"])
def test_singular_value_loss_is_finite_for_a_collapsed_batch(kind):
    collapsed = torch.randn(1, 1, 16).expand(2, 32, 16).clone().requires_grad_(True)  # rank 1: repeated zeros
    loss = singular_value_loss(collapsed, kind)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(collapsed.grad).all()
    spread = torch.randn(2, 32, 16)
    assert singular_value_loss(spread, kind) < loss  # dispersion lowers it


def test_nuclear_loss_values():
    eye = torch.eye(4).unsqueeze(0)  # orthonormal rows: singular values 1 -> -4
    assert singular_value_loss(eye).item() == pytest.approx(-4.0)
    assert singular_value_loss(torch.ones(1, 4, 4)).item() == pytest.approx(-2.0)  # rank 1: sqrt(4) * 1


def test_brownian_directions_change_every_step_and_follow_the_seed():
    P = torch.randn(3, 8, 16)
    torch.manual_seed(0)
    first, second = brownian_loss(P), brownian_loss(P)
    torch.manual_seed(0)
    assert brownian_loss(P) == first  # reproducible from the step seed
    assert first != second
    shared = brownian_loss(P.expand(3, 8, 16).contiguous()[:1].expand(3, 8, 16), "per_image")
    assert torch.isfinite(shared)


# --------------------------------------------------------------------------------------------- EMA target


def test_no_gradient_reaches_the_target_network():
    model = MSBRegForPreTraining(tiny_msbreg_config())
    model(_views(k=4)).loss.backward()
    targets = [p for n, p in model.named_parameters() if n.startswith("target_")]
    assert targets
    assert all(not p.requires_grad and p.grad is None for p in targets)
    from ssl_hf.training.lars import build_lars

    optimised = {id(p) for group in build_lars(model, 1.0, 1e-5).param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in targets)


def test_ema_update_moves_the_target_by_the_cosine_momentum():
    model = BYOLForPreTraining(tiny_byol_config(ema_base=0.99))
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_backbone.parameters()]
    model.post_optimizer_step(step=25, max_steps=100)
    tau = 1 - 0.01 * (math.cos(math.pi * 0.25) + 1) / 2
    for old, new, online in zip(before, model.target_backbone.parameters(), model.backbone.parameters()):
        torch.testing.assert_close(new, tau * old + (1 - tau) * online)
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)


def test_target_starts_as_a_copy_and_is_saved(tmp_path):
    model = BYOLForPreTraining(tiny_byol_config())
    for a, b in zip(model.backbone.state_dict().values(), model.target_backbone.state_dict().values()):
        assert torch.equal(a, b)
    model.save_pretrained(tmp_path)
    reloaded = BYOLForPreTraining.from_pretrained(tmp_path)
    assert all(not p.requires_grad for n, p in reloaded.named_parameters() if n.startswith("target_"))


# ------------------------------------------------------------------------------------- training and export


def test_msbreg_peak_lr_is_scaled_by_the_number_of_views(tmp_path):
    args = TrainingArguments(
        dataset="digits", output_dir=str(tmp_path), max_steps=1, batch_size=8, base_learning_rate=0.4, save_steps=1
    )
    pretrain(get_method("msbreg"), tiny_msbreg_config(num_views=3), args)
    record = json.loads((tmp_path / "args.json").read_text())
    assert record["training"]["optimizer"] == "lars"
    assert record["derived"]["peak_learning_rate"] == pytest.approx(0.4 * 8 / 256 * 3)
    step = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert {"loss_centroid", "loss_singular", "loss_brownian"} <= set(step)


def test_byol_logs_its_own_loss_name(tmp_path):
    """BYOL's one loss term is named after BYOL (`loss_byol`), not after MSBReg's multiview centroid loss."""
    args = TrainingArguments(dataset="digits", output_dir=str(tmp_path), max_steps=1, batch_size=8, save_steps=1)
    pretrain(get_method("byol"), tiny_byol_config(), args)
    step = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert "loss_byol" in step
    assert step["loss_byol"] == step["loss"]
    assert not {k for k in step if k.startswith("loss_") and k != "loss_byol"}


def test_vit_backbone_option(tmp_path):
    vit = backbone_config("vit-tiny", 32, 8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    model = BYOLForPreTraining(tiny_byol_config(backbone_config=vit))
    assert model.config.input_size == 32
    model(_views()).loss.backward()
    model.eval().save_pretrained(tmp_path / "final")
    export_pretrained(tmp_path / "final", tmp_path / "export")
    assert type(AutoModel.from_pretrained(tmp_path / "export")) is ViTModel


def test_resnet_export_is_a_stock_resnet(tmp_path):
    model = MSBRegForPreTraining(tiny_msbreg_config()).eval()
    model.save_pretrained(tmp_path / "final")
    export_pretrained(tmp_path / "final", tmp_path / "export")
    exported = AutoModel.from_pretrained(tmp_path / "export").eval()
    assert type(exported) is ResNetModel
    assert not any(k.startswith(("target", "projector", "predictor")) for k in exported.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(exported(x).pooler_output, model.backbone(x).pooler_output)
    processor = json.loads((tmp_path / "export" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32}
    assert "pooler_output.flatten(1)" in (tmp_path / "export" / "README.md").read_text()


def test_small_stem_resnet_keeps_the_resolution_and_exports_in_ssl_hf_format(tmp_path):
    config = tiny_byol_config(backbone_config=backbone_config("resnet-18-small-stem", **_TINY_RESNET))
    model = BYOLForPreTraining(config).eval()
    assert model.backbone(torch.randn(1, 3, 32, 32)).last_hidden_state.shape[-1] == 4  # 32 / 8 (3 strided stages)
    model.save_pretrained(tmp_path / "final")
    export_pretrained(tmp_path / "final", tmp_path / "export")
    assert type(AutoModel.from_pretrained(tmp_path / "export")).__name__ == "SmallStemResNetModel"
    assert "import ssl_hf" in (tmp_path / "export" / "README.md").read_text()


_TINY_RESNET = dict(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1])


def test_views_of_the_preset_feed_the_model():
    from ssl_hf.data.views import build_views

    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(3)]
    import numpy as np

    rngs = [np.random.default_rng(i) for i in range(3)]
    views = build_views("msbreg", tiny_msbreg_config(num_views=5))(images, rngs)
    assert views["pixel_values"].shape == (3, 5, 3, 32, 32)
    byol = build_views("byol", tiny_byol_config())(images, rngs)
    assert byol["pixel_values"].shape == (3, 2, 3, 32, 32)


def test_wrong_input_shape_is_explained():
    with pytest.raises(ValueError, match="batch, views, channels"):
        BYOLForPreTraining(tiny_byol_config())(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="2 views"):
        BYOLForPreTraining(tiny_byol_config())(_views(k=3))


@pytest.mark.parametrize(
    "overrides",
    [
        {"centroid_mode": "all_views"},
        {"centroid_mode": "centroid_to_centroid"},
        {"sv_loss_type": "log"},
        {"sv_loss_type": "whitening"},
        {"brownian_noise": "per_image"},
        {"brownian_noise": "per_batch", "brownian_unit": False},
        {"regularize_on": "projection"},
        {"head_norm": "none"},
        {"proj_num_layers": 3},
    ],
)
def test_msbreg_switches_train(overrides):
    model = MSBRegForPreTraining(tiny_msbreg_config(**overrides))
    out = model(_views(k=4))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_projector_depth_switch_sets_the_online_and_target_projectors():
    model = BYOLForPreTraining(tiny_byol_config(proj_num_layers=3))
    for head in (model.projector, model.target_projector):
        assert sum(isinstance(m, torch.nn.Linear) for m in head) == 3
        assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head) == 2
    assert sum(isinstance(m, torch.nn.Linear) for m in model.predictor) == 2  # the predictor keeps 2
    assert torch.equal(model.projector[4].weight, model.target_projector[4].weight)  # the target starts as a copy


def test_bad_msbreg_config():
    with pytest.raises(Exception, match="num_views must be >= 2"):
        tiny_msbreg_config(num_views=1)
    with pytest.raises(Exception, match="proj_num_layers must be >= 2"):
        tiny_byol_config(proj_num_layers=1)
    with pytest.raises(Exception, match="supports ResNet and ViT"):
        tiny_byol_config(backbone_config={"model_type": "bert"})


# --------------------------------------------------------------------------------- LayerNorm heads: collapse


def _embeddings(final):
    from transformers import AutoModelForPreTraining

    from ssl_hf.data.datasets import load_image_source
    from ssl_hf.data.views import EvalView

    images, _ = load_image_source("digits", "test").read(slice(0, 256), [])
    model = AutoModelForPreTraining.from_pretrained(final).eval()
    with torch.no_grad():
        return model.predictor(
            model.projector(model.backbone(EvalView(32)(images)["pixel_values"]).pooler_output[:, :, 0, 0])
        )


def test_layernorm_heads_byol_collapses_msbreg_does_not(tmp_path):
    """MSBReg supplement Tab. 4 in miniature: 100 LARS steps on digits, tiny ResNet, LayerNorm in the heads.

    Measured (seed 0): BYOL's predictions collapse to effective rank ~1.2 and per-dimension std ~0.003, MSBReg (K = 2,
    lambda_s 0.1, lambda_b 0.5) keeps rank ~5 and std ~0.12 (a uniform spread in 16 dims gives 0.25).
    """

    def run(name, config):
        args = TrainingArguments(
            dataset="digits", output_dir=str(tmp_path / name), max_steps=100, batch_size=64, learning_rate=5.0
        )
        args.warmup_steps, args.save_steps = 5, 100
        return _embeddings(pretrain(get_method(name), config, args))

    byol = run("byol", tiny_byol_config(head_norm="ln"))
    msbreg = run("msbreg", tiny_msbreg_config(head_norm="ln", num_views=2, lambda_s=0.1, lambda_b=0.5))
    assert embedding_std(byol) < 0.03
    assert effective_rank(byol) < 2
    assert embedding_std(msbreg) > 0.08
    assert effective_rank(msbreg) > 3


def test_msbreg_resume_continues_exactly(tmp_path, monkeypatch):
    """The EMA target, the momentum schedule and the Brownian draws all survive a kill and resume."""
    from accelerate.state import AcceleratorState

    from ssl_hf.training import loop as loop_module

    spec = get_method("msbreg")

    def args(name, **overrides):
        fields = dict(dataset="digits", output_dir=str(tmp_path / name), max_steps=4, batch_size=8, save_steps=2)
        return TrainingArguments(**{**fields, "learning_rate": 1.0, "warmup_steps": 1, **overrides})

    pretrain(spec, tiny_msbreg_config(), args("full"))
    real_save = loop_module.save_checkpoint

    def save_then_die(accelerator, out, state, keep):
        real_save(accelerator, out, state, keep)
        raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(spec, tiny_msbreg_config(), args("resumed"))
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    AcceleratorState._reset_state(True)
    pretrain(spec, tiny_msbreg_config(), args("resumed", resume_from_checkpoint="latest"))

    def losses(name):
        return [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    full, resumed = losses("full"), losses("resumed")
    assert len(resumed) == 4
    assert resumed == pytest.approx(full, abs=1e-6)


_FRESH = """
import sys, json, torch
from transformers import AutoModel
model, info = AutoModel.from_pretrained(sys.argv[1], output_loading_info=True)
x = torch.load(sys.argv[2])
torch.save(model.eval()(x).pooler_output, sys.argv[3])
print(json.dumps({"class": type(model).__name__, "missing": sorted(info["missing_keys"]), "ssl_hf": "ssl_hf" in sys.modules}))
"""


def test_resnet_export_loads_in_a_fresh_process_without_ssl_hf(tmp_path):
    import os
    import subprocess
    import sys

    model = BYOLForPreTraining(tiny_byol_config()).eval()
    model.save_pretrained(tmp_path / "final")
    export_pretrained(tmp_path / "final", tmp_path / "export")
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [sys.executable, "-c", _FRESH, str(tmp_path / "export"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"class": "ResNetModel", "missing": [], "ssl_hf": False}
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), model.backbone(x).pooler_output)
