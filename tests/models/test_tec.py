"""TEC: base-model targets (shapes, normalisation, attention rows), isolation of the base model, folding, base formats."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_base_model_dir, tiny_mae_config, tiny_tec_config
from safetensors import safe_open
from transformers import AutoModel, Dinov2Model, ViTMAEConfig, ViTMAEModel, ViTModel

from ssl_hf import MAEForPreTraining, TECForPreTraining, backbone_config, get_method
from ssl_hf.export import export_pretrained, vit_to_dinov2
from ssl_hf.layers.vit import encode_visible
from ssl_hf.models.tec import BaseModelTargets, load_base_encoder
from ssl_hf.training import TrainingArguments, pretrain
from ssl_hf.training import loop as loop_module


STUDENT_PREFIXES = ("backbone.", "input_adapter.", "encoder_adapter.", "decoder.")


@pytest.fixture
def base():
    return load_base_encoder(tiny_base_model_dir())


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------------- targets


def test_feature_target_is_the_mean_of_the_last_two_blocks_normalised_over_patches(base, images):
    targets = BaseModelTargets(base, last_layers=2)(images, attention_mode=None)
    assert targets.features.shape == (3, 16, 32)  # (B, L, C_t): cls dropped
    assert targets.features.dtype == torch.float32
    torch.testing.assert_close(targets.features.mean(1), torch.zeros(3, 32), atol=1e-5, rtol=0)
    torch.testing.assert_close(targets.features.var(1), torch.ones(3, 32), atol=1e-3, rtol=0)
    # the raw outputs of the last two blocks, before the final norm (eager run with every hidden state)
    hidden = base(images, output_hidden_states=True).hidden_states
    raw = 0.5 * (hidden[-1] + hidden[-2])[:, 1:]
    expected = (raw - raw.mean(1, keepdim=True)) / (raw.var(1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(targets.features, expected, atol=1e-5, rtol=0)


def test_channel_and_no_normalisation(base, images):
    channel = BaseModelTargets(base)(images, target_norm="channel", attention_mode=None).features
    torch.testing.assert_close(channel.mean(-1), torch.zeros(3, 16), atol=1e-5, rtol=0)
    raw = BaseModelTargets(base)(images, target_norm="none", attention_mode=None).features
    assert raw.mean(1).abs().max() > 1e-2


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_attention_target_rows_match_the_base_models_own_attention(images, attn_implementation):
    """Rows = cls + top-k patches ranked by the head-mean cls row; targets = softmax(logits / tau) over patch keys."""
    base = ViTModel.from_pretrained(tiny_base_model_dir(), attn_implementation=attn_implementation)
    targets = BaseModelTargets(base)(images, attention_mode="select", topk=3, tau=1.8)
    assert targets.attention_probs.shape == (3, 4, 4, 16)  # (B, H_t, k+1, L)
    torch.testing.assert_close(targets.attention_probs.sum(-1), torch.ones(3, 4, 4))
    # reference: post-softmax probabilities of an eager run; log p differs from the logits by a per-row constant
    eager = ViTModel.from_pretrained(tiny_base_model_dir(), attn_implementation="eager")
    probs = eager(images, output_attentions=True).attentions[-1]  # (B, H, 1+L, 1+L)
    log_p = probs.clamp_min(1e-30).log()
    expected_topk = log_p[:, :, 0, 1:].mean(1).topk(3, dim=-1).indices
    assert torch.equal(targets.topk_indices, expected_topk)
    assert torch.equal(targets.rows[:, 0], torch.zeros(3, dtype=torch.long))
    assert torch.equal(targets.rows[:, 1:], expected_topk + 1)
    rows = log_p[torch.arange(3)[:, None], :, targets.rows].transpose(1, 2)[..., 1:]  # (B, H, k+1, L)
    torch.testing.assert_close(targets.attention_probs, F.softmax(rows / 1.8, dim=-1), atol=1e-5, rtol=0)


def test_attention_modes_select_their_rows(base, images):
    targets = BaseModelTargets(base)
    assert targets(images, attention_mode="cls_only").attention_probs.shape == (3, 4, 1, 16)
    every = targets(images, attention_mode="all")
    assert every.attention_probs.shape == (3, 4, 17, 16)
    assert torch.equal(every.rows[0], torch.arange(17))


def test_vit_mae_and_dinov2_bases_give_the_targets_of_the_same_vit(images, tmp_path):
    torch.manual_seed(0)  # MLP width a multiple of the width, as the dinov2 format needs
    bb = backbone_config("vit-tiny", 32, 8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    base = ViTModel(bb, add_pooling_layer=False).eval()
    reference = BaseModelTargets(base)(images, topk=3)
    mae_config = ViTMAEConfig(**{k: v for k, v in base.config.to_dict().items() if k in ViTMAEConfig().to_dict()})
    mae = ViTMAEModel(mae_config)
    result = mae.load_state_dict(base.state_dict(), strict=False)
    assert not result.missing_keys
    assert not result.unexpected_keys
    mae.save_pretrained(tmp_path / "vit_mae")
    vit_to_dinov2(base).save_pretrained(tmp_path / "dinov2")
    for name, kind in (("vit_mae", ViTMAEModel), ("dinov2", Dinov2Model)):
        loaded = load_base_encoder(tmp_path / name)
        assert type(loaded) is kind
        got = BaseModelTargets(loaded)(images, topk=3)
        torch.testing.assert_close(got.features, reference.features, atol=1e-4, rtol=0)
        torch.testing.assert_close(got.attention_probs, reference.attention_probs, atol=1e-5, rtol=0)


def test_a_run_checkpoint_is_a_base_model_through_its_encoder(tmp_path):
    mae = MAEForPreTraining(tiny_mae_config()).eval()
    mae.save_pretrained(tmp_path / "final")
    loaded = load_base_encoder(tmp_path / "final")
    assert isinstance(loaded, ViTModel)
    torch.testing.assert_close(loaded.state_dict()["layernorm.weight"], mae.backbone.layernorm.weight)
    tec = TECForPreTraining(tiny_tec_config(base_model=str(tmp_path / "final")))
    assert torch.isfinite(tec(torch.randn(2, 3, 32, 32)).loss)


# ------------------------------------------------------------------------------------- base model isolation


def test_no_gradient_reaches_the_base_model_and_it_is_not_a_parameter():
    model = TECForPreTraining(tiny_tec_config())
    model(torch.randn(2, 3, 32, 32), noise=torch.rand(2, 16)).loss.backward()
    base = model.base_targets.encoder
    assert not base.training
    assert all(not p.requires_grad and p.grad is None for p in base.parameters())
    own = {id(p) for p in model.parameters()}
    assert not any(id(p) in own for p in base.parameters())
    assert all(name.startswith(STUDENT_PREFIXES) for name in model.state_dict())


def test_base_weights_are_not_saved_and_reloading_finds_the_base_again(tmp_path):
    model = TECForPreTraining(tiny_tec_config()).eval()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    # transformers 5 writes ViT's checkpoint names (encoder.layer.N...): compare counts and owners
    assert len(keys) == len(model.state_dict())
    assert all(name.startswith(STUDENT_PREFIXES) for name in keys)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["base_model"] == str(tiny_base_model_dir())
    assert (config["base_hidden_size"], config["base_num_attention_heads"]) == (32, 4)
    reloaded = TECForPreTraining.from_pretrained(tmp_path).eval()
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    assert reloaded(x, noise=noise).loss.item() == model(x, noise=noise).loss.item()


def _args(tmp_path, name, **overrides):
    fields = dict(
        dataset="digit-scenes",
        output_dir=str(tmp_path / name),
        max_steps=4,
        batch_size=4,
        save_steps=2,
        learning_rate=1e-3,
        warmup_steps=1,
    )
    return TrainingArguments(**{**fields, **overrides})


def test_checkpoints_hold_no_base_weights_and_resume_reloads_the_base(tmp_path, monkeypatch):
    spec = get_method("tec")
    pretrain(spec, tiny_tec_config(), _args(tmp_path, "full"))
    real_save = loop_module.save_checkpoint

    def save_then_die(accelerator, out, state, keep):
        real_save(accelerator, out, state, keep)
        raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(spec, tiny_tec_config(), _args(tmp_path, "resumed"))
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    with safe_open(tmp_path / "resumed" / "checkpoints" / "step_2" / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert names
    assert all(name.startswith(STUDENT_PREFIXES) for name in names)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    # a fresh model from the same config: the base model is loaded again from config.base_model
    pretrain(spec, tiny_tec_config(), _args(tmp_path, "resumed", resume_from_checkpoint="latest"))

    def losses(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["loss"] for r in map(json.loads, lines)}

    full, resumed = losses("full"), losses("resumed")
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert abs(full[step] - resumed[step]) <= 1e-6


def test_missing_base_folder_on_resume_is_named(tmp_path):
    model = TECForPreTraining(tiny_tec_config())
    model.save_pretrained(tmp_path / "final")
    config = json.loads((tmp_path / "final" / "config.json").read_text())
    config["base_model"] = str(tmp_path / "moved_away")
    (tmp_path / "final" / "config.json").write_text(json.dumps(config))
    reloaded = TECForPreTraining.from_pretrained(tmp_path / "final")
    with pytest.raises(FileNotFoundError, match="does not exist on this machine"):
        reloaded(torch.randn(1, 3, 32, 32))


# ---------------------------------------------------------------------------------------------- export


def test_folding_the_input_adapter_gives_the_adapter_path_outputs():
    torch.manual_seed(0)
    model = TECForPreTraining(tiny_tec_config()).eval()
    x = torch.randn(2, 3, 32, 32)
    ascending = torch.arange(16.0).expand(2, -1)
    adapter_path, _ = encode_visible(model.backbone, x, ascending, 0.0, cls_token=model.adapted_cls_token())
    folded = model.get_export_backbone()
    assert isinstance(folded, ViTModel)
    assert not torch.equal(folded.embeddings.cls_token, model.backbone.embeddings.cls_token)
    torch.testing.assert_close(folded(x).last_hidden_state, adapter_path, atol=1e-6, rtol=0)


def test_export_is_a_plain_vit_that_can_be_the_next_base(tmp_path):
    model = TECForPreTraining(tiny_tec_config()).eval()
    model.save_pretrained(tmp_path / "final")
    export_pretrained(tmp_path / "final", tmp_path / "export")
    exported = AutoModel.from_pretrained(tmp_path / "export")
    assert type(exported) is ViTModel
    assert not any("adapter" in k or "decoder" in k for k in exported.state_dict())
    nxt = TECForPreTraining(tiny_tec_config(base_model=str(tmp_path / "export")))
    assert torch.isfinite(nxt(torch.randn(2, 3, 32, 32)).loss)


# ------------------------------------------------------------------------------------- switches and errors


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_input_adapter": False},
        {"use_encoder_adapter": False},
        {"adapter_group_size": 2},
        {"target_norm": "channel"},
        {"target_norm": "none"},
        {"attention_target_mode": "cls_only"},
        {"attention_target_mode": "all"},
        {"attention_scale": "head"},
        {"teacher_last_layers": 1},
    ],
)
def test_ablation_switches_train(overrides):
    model = TECForPreTraining(tiny_tec_config(**overrides))
    out = model(torch.randn(2, 3, 32, 32))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_without_the_attention_target_there_is_no_attention_branch():
    model = TECForPreTraining(tiny_tec_config(use_attention_target=False))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.loss_attention.item() == 0
    assert out.attention_logits is None
    assert out.loss.item() == out.loss_feature.item()
    assert not any("attention_" in name for name, _ in model.decoder.named_parameters())


def test_attention_loss_is_the_cross_entropy_to_the_target_rows():
    model = TECForPreTraining(tiny_tec_config()).eval()
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    out = model(x, noise=noise)
    targets = model.base_targets(x, topk=3, tau=1.8)
    expected = -(targets.attention_probs * out.attention_logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(out.loss_attention, expected)
    assert out.attention_logits.shape == (2, 4, 4, 16)


def test_a_wider_base_sets_the_prediction_width(tmp_path):
    bb = backbone_config("vit-tiny", 32, 8, hidden_size=48, num_hidden_layers=3, num_attention_heads=6)
    ViTModel(bb, add_pooling_layer=False).save_pretrained(tmp_path)
    model = TECForPreTraining(tiny_tec_config(base_model=str(tmp_path), teacher_last_layers=3))
    assert model.config.base_hidden_size == 48
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 16, 48)
    assert out.attention_logits.shape == (2, 6, 4, 16)


def test_init_from_base_copies_the_base_weights():
    model = TECForPreTraining(tiny_tec_config(init_from_base=True))
    model.prepare_for_pretraining(resumed=False)
    base = model.base_targets.encoder.state_dict()
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, base[name]), name
    assert not model.backbone.embeddings.position_embeddings.requires_grad


def test_bf16_autocast_keeps_targets_and_loss_in_float32():
    model = TECForPreTraining(tiny_tec_config())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 32, 32))
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)


def test_patch_grid_mismatch_is_refused(tmp_path):
    ViTModel(backbone_config("vit-tiny", 32, 4, num_hidden_layers=2), add_pooling_layer=False).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"same patches.*--patch_size 4"):
        TECForPreTraining(tiny_tec_config(base_model=str(tmp_path)))


def test_non_vit_base_is_refused(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], embedding_size=8)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"must be a ViT encoder.*model_type='resnet'"):
        TECForPreTraining(tiny_tec_config(base_model=str(tmp_path)))


def test_missing_base_model_is_explained(tmp_path):
    with pytest.raises(ValueError, match="--base_model"):
        TECForPreTraining(tiny_tec_config(base_model=None))
    with pytest.raises(ValueError, match="Cannot read the base model"):
        TECForPreTraining(tiny_tec_config(base_model=str(tmp_path / "nothing_here")))


def test_adapter_groups_must_divide_the_depth():
    with pytest.raises(Exception, match="adapter_group_size=3 must divide num_hidden_layers=2"):
        tiny_tec_config(adapter_group_size=3)


def test_in_memory_base_model():
    base = ViTModel.from_pretrained(tiny_base_model_dir())
    model = TECForPreTraining(tiny_tec_config(base_model=None), base_model=base)
    assert model.config.base_hidden_size == 32
    assert torch.isfinite(model(torch.randn(2, 3, 32, 32)).loss)


def test_keep_adapters_export_is_the_adapter_path(tmp_path):
    torch.manual_seed(0)
    model = TECForPreTraining(tiny_tec_config()).eval()
    model.save_pretrained(tmp_path / "final")
    export_pretrained(tmp_path / "final", tmp_path / "adapters", keep_adapters=True)
    loaded = AutoModel.from_pretrained(tmp_path / "adapters").eval()
    assert type(loaded).__name__ == "TECModel"
    assert not any(name.startswith("decoder.") for name in loaded.state_dict())
    x = torch.randn(2, 3, 32, 32)
    expected, _ = model.encode(x, torch.arange(16.0).expand(2, -1), 0.0)
    out = loaded(x)
    torch.testing.assert_close(out.last_hidden_state, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.pooler_output, expected[:, 0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="dinov2"):
        export_pretrained(tmp_path / "final", tmp_path / "x", "dinov2", keep_adapters=True)
