"""MAE invariants: parity with transformers' ViTMAE, paper initialisation, fixed tables, save/load, registration."""

import pytest
import torch
from conftest import tiny_mae_config
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, AutoModelForPreTraining, ViTMAEForPreTraining

import ssl_hf
from ssl_hf import MAEConfig, MAEForPreTraining
from ssl_hf.layers.pos_embed import sincos_2d
from ssl_hf.losses.reconstruction import masked_mse


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_equals_transformers_vitmae_for_same_weights_and_noise(norm_pix_loss):
    torch.manual_seed(0)
    config = tiny_mae_config(norm_pix_loss=norm_pix_loss)
    ours, theirs = MAEForPreTraining(config).eval(), ViTMAEForPreTraining(config.to_vit_mae_config()).eval()
    state = {k.replace("backbone.", "vit.", 1): v for k, v in ours.state_dict().items()}
    assert not theirs.load_state_dict(state, strict=True).missing_keys
    x, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 16)
    out, ref = ours(x, noise=noise), theirs(pixel_values=x, noise=noise)
    assert abs(out.loss.item() - ref.loss.item()) < 1e-5
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=0)
    assert torch.equal(out.mask, ref.mask.bool())


def test_mae_initialisation_follows_the_paper():
    config = tiny_mae_config(decoder_hidden_size=64, decoder_num_attention_heads=4)
    model = MAEForPreTraining(config)
    torch.testing.assert_close(model.backbone.embeddings.position_embeddings.data, sincos_2d(32, 4))
    torch.testing.assert_close(model.decoder.decoder_pos_embed.data, sincos_2d(64, 4))
    fc1 = model.backbone.layers[0].mlp.fc1.weight
    assert fc1.abs().max() <= (6 / sum(fc1.shape)) ** 0.5  # xavier-uniform bound
    assert 0.01 < model.decoder.mask_token.std() < 0.03
    assert model.backbone.config.layer_norm_eps == 1e-6


def test_fixed_tables_stay_frozen_after_reload(tmp_path):
    model = MAEForPreTraining(tiny_mae_config())
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(reloaded, MAEForPreTraining)
    for m in (model, reloaded):
        assert not m.backbone.embeddings.position_embeddings.requires_grad
        assert not m.decoder.decoder_pos_embed.requires_grad


def test_save_load_gives_the_same_loss_with_fixed_noise(tmp_path):
    model = MAEForPreTraining(tiny_mae_config()).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    assert model(x, noise=noise).loss.item() == reloaded(x, noise=noise).loss.item()
    assert (tmp_path / "model.safetensors").is_file()


def test_backward_reaches_every_trainable_parameter():
    model = MAEForPreTraining(tiny_mae_config())
    model(torch.randn(2, 3, 32, 32)).loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_loss_ignores_visible_patches():
    pred, target = torch.randn(2, 16, 8), torch.randn(2, 16, 8)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :4] = True
    changed = pred.clone()
    changed[:, 4:] += 100.0  # visible patches only
    assert masked_mse(pred, target, mask) == masked_mse(changed, target, mask)
    expected = (pred[:, :4] - target[:, :4]).pow(2).mean()
    torch.testing.assert_close(masked_mse(pred, target, mask), expected)


def test_masking_is_deterministic_given_noise_and_random_without():
    model = MAEForPreTraining(tiny_mae_config()).eval()
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    assert model(x, noise=noise).loss == model(x, noise=noise).loss
    masks = [model(x).mask for _ in range(3)]  # unseeded: 3 draws of 2 masks out of C(16, 4) = 1820 each
    assert not all(torch.equal(masks[0], m) for m in masks[1:])
    assert model(x, noise=noise).mask.sum(1).tolist() == [12, 12]


def test_registered_with_auto_classes():
    assert "mae" in ssl_hf.METHODS
    config = AutoConfig.for_model("ssl_mae")
    assert isinstance(config, MAEConfig)
    assert isinstance(AutoModelForPreTraining.from_config(tiny_mae_config()), MAEForPreTraining)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"decoder_hidden_size": 18, "decoder_num_attention_heads": 2}, "divisible by 4"),
        ({"decoder_hidden_size": 16, "decoder_num_attention_heads": 3}, "not divisible"),
    ],
)
def test_config_validation_names_the_problem(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        tiny_mae_config(**overrides)


def test_patch_size_must_divide_image_size():
    with pytest.raises(ValueError, match="does not divide"):
        ssl_hf.backbone_config("vit-tiny", 32, 5)
