"""ASL invariants: reduces to MAE, alignment loss definition and gradients, DLE mask sharing, eval determinism."""

import pytest
import torch
from conftest import tiny_asl_config, tiny_mae_config
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoModel

from ssl_hf import ASLForPreTraining, MAEForPreTraining
from ssl_hf.export import export_pretrained
from ssl_hf.models.asl import asl_alignment_loss


def test_without_feature_augmentation_asl_is_exactly_mae():
    torch.manual_seed(0)
    asl = ASLForPreTraining(tiny_asl_config(feature_augmentation="none", use_alignment=False)).eval()
    mae = MAEForPreTraining(tiny_mae_config()).eval()
    assert not mae.load_state_dict(asl.state_dict(), strict=True).missing_keys
    x, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 16)
    out, ref = asl(x, noise=noise), mae(x, noise=noise)
    assert out.loss.item() == ref.loss.item()
    assert torch.equal(out.logits, ref.logits)
    assert out.loss_align is None
    assert out.logits_aug is None


def test_alignment_loss_by_hand_on_two_patches():
    ori = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]], requires_grad=True)  # (B=1, N=2, P=2)
    aug = torch.tensor([[[2.0, 1.0], [5.0, 5.0]]], requires_grad=True)
    hidden = torch.tensor([[True, False]])  # only patch 0 is hidden
    loss = asl_alignment_loss(ori, aug, hidden)
    # |1-2| + |3-1| = 3 -> mean over P = 1.5, counted twice (Eq. 9's two stop-gradient terms) -> 3.0
    assert loss.item() == pytest.approx(3.0)
    loss.backward()
    assert torch.equal(ori.grad[0, 1], torch.zeros(2))  # the visible patch gets no gradient
    torch.testing.assert_close(ori.grad[0, 0], torch.tensor([-0.5, 0.5]))
    torch.testing.assert_close(aug.grad[0, 0], torch.tensor([0.5, -0.5]))
    # changing the visible patch changes nothing
    assert (
        asl_alignment_loss(ori.detach(), aug.detach() + torch.tensor([0.0, 0.0, 9.0, 9.0]).view(1, 2, 2), hidden) == 3
    )


def test_cosine_alignment_is_zero_for_parallel_predictions():
    ori = torch.randn(2, 4, 6)
    assert asl_alignment_loss(ori, 3 * ori, torch.ones(2, 4), kind="cosine").abs().item() < 1e-6


def test_alignment_ignores_visible_patches_and_the_cls_position():
    torch.manual_seed(0)
    model = ASLForPreTraining(tiny_asl_config()).eval()  # eval: AEE dropout off, forward deterministic
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    out = model(x, noise=noise)
    pred = model.decoder(*_branch_inputs(model, x, noise), keep_cls=True)
    ori, aug = pred.chunk(2)
    expected = asl_alignment_loss(ori[:, 1:], aug[:, 1:], out.mask)
    torch.testing.assert_close(out.loss_align, expected)
    with_cls = ASLForPreTraining(tiny_asl_config(align_cls=True)).eval()
    with_cls.load_state_dict(model.state_dict())
    assert with_cls(x, noise=noise).loss_align.item() != pytest.approx(out.loss_align.item())


def _branch_inputs(model, x, noise):
    latent, sample = model.encode_branches(x, noise, False)
    return latent, sample.restore_indices.repeat(2, 1)


def test_alignment_gradient_reaches_encoder_aee_and_decoder():
    model = ASLForPreTraining(tiny_asl_config())
    model(torch.randn(2, 3, 32, 32)).loss_align.backward()
    for part in (model.backbone, model.aee, model.decoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.backbone.layers[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_total_loss_composition():
    model = ASLForPreTraining(tiny_asl_config(alignment_weight=0.5)).eval()
    out = model(torch.randn(2, 3, 32, 32), noise=torch.rand(2, 16))
    torch.testing.assert_close(out.loss, out.loss_mae + 0.5 * out.loss_align)


def test_mae_loss_on_original_branch_only():
    torch.manual_seed(0)
    both = ASLForPreTraining(tiny_asl_config()).eval()
    ori = ASLForPreTraining(tiny_asl_config(mae_loss_on="ori")).eval()
    ori.load_state_dict(both.state_dict())
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    assert ori(x, noise=noise).loss_mae.item() != pytest.approx(both(x, noise=noise).loss_mae.item())


def test_dle_branches_share_the_token_mask():
    torch.manual_seed(0)
    x, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 16)
    model = ASLForPreTraining(tiny_asl_config(feature_augmentation="dle", dle_dropout_prob=0.0)).train()
    latent, sample = model.encode_branches(x, noise, False)
    first, second = latent.chunk(2)
    assert torch.equal(first, second)  # same visible patches (and no dropout) -> identical branches
    assert sample.mask.shape == (3, 16)
    noisy = ASLForPreTraining(tiny_asl_config(feature_augmentation="dle", dle_dropout_prob=0.3)).train()
    first, second = noisy.encode_branches(x, noise, False)[0].chunk(2)
    assert not torch.equal(first, second)  # independent dropout masks per branch
    out = noisy(x, noise=noise)
    assert out.loss_align.item() > 0


def test_eval_mode_turns_aee_dropout_off():
    model = ASLForPreTraining(tiny_asl_config())
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    model.train()
    assert not torch.equal(model(x, noise=noise).logits_aug, model(x, noise=noise).logits_aug)
    model.eval()
    a, b = model(x, noise=noise), model(x, noise=noise)
    assert torch.equal(a.logits_aug, b.logits_aug)
    assert a.loss.item() == b.loss.item()


def test_export_keeps_only_the_encoder(tmp_path):
    model = ASLForPreTraining(tiny_asl_config()).eval()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "final")
    export_pretrained(tmp_path / "final", tmp_path / "export")
    exported = AutoModel.from_pretrained(tmp_path / "export").eval()
    assert type(exported).__name__ == "ViTModel"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(exported(x).last_hidden_state, model.backbone(x).last_hidden_state, atol=1e-6, rtol=0)
    assert "asl" in (tmp_path / "export" / "README.md").read_text().lower()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"feature_augmentation": "none"}, "needs two branches"),
        ({"aee_num_attention_heads": 3}, "not divisible"),
        ({"aee_hidden_dropout_prob": 1.0}, r"\[0, 1\)"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        tiny_asl_config(**overrides)
