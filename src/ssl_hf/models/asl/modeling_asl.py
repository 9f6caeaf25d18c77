"""ASL: MAE with a patch-level consistency loss between two feature branches of one masked view."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import ModelOutput

from ...layers.mae_decoder import vit_block
from ...layers.patches import normalize_per_patch, patchify
from ...layers.vit import encode_visible
from ...losses.reconstruction import masked_mse
from ...modeling_base import MaskedAutoencoderPreTrainedModel
from .configuration_asl import ASLConfig


@dataclass
class ASLPreTrainingOutput(ModelOutput):
    """Output of `ASLForPreTraining`.

    Args:
        loss: `loss_mae + alignment_weight * loss_align`.
        loss_mae: Normalised-pixel MSE on hidden patches (averaged over the branches it applies to).
        loss_align: Symmetric stop-gradient alignment between the two branches' predictions (Eq. 9-10).
        logits: `(B, L, p*p*C)` predictions of the original branch.
        logits_aug: `(B, L, p*p*C)` predictions of the augmented branch (None without feature augmentation).
        mask: `(B, L)` bool, True = hidden.
        restore_indices: `(B, L)` un-shuffle permutation.
    """

    loss: Tensor | None = None
    loss_mae: Tensor | None = None
    loss_align: Tensor | None = None
    logits: Tensor | None = None
    logits_aug: Tensor | None = None
    mask: Tensor | None = None
    restore_indices: Tensor | None = None


def asl_alignment_loss(pred_ori: Tensor, pred_aug: Tensor, weights: Tensor, kind: str = "l1") -> Tensor:
    """Symmetric stop-gradient alignment between two branches' patch predictions (ASL Eq. 9-10).

    `L_s(i) = |ori_i - sg(aug_i)| + |sg(ori_i) - aug_i|`, averaged over the P values of a patch, then a weighted mean
    over patches. Its gradient equals that of `|ori - aug|`; its value is twice as large, as Eq. 9 writes it.

    Args:
        pred_ori: `(B, N, P)` predictions of the original branch.
        pred_aug: `(B, N, P)` predictions of the augmented branch.
        weights: `(B, N)` patch weights (the hidden-patch mask for Eq. 10).
        kind: `"l1"` or `"cosine"` (1 - cosine similarity per patch).
    """
    if kind == "l1":
        to_ori = (pred_ori - pred_aug.detach()).abs().mean(-1)
        to_aug = (pred_ori.detach() - pred_aug).abs().mean(-1)
    else:
        to_ori = 1 - F.cosine_similarity(pred_ori, pred_aug.detach(), dim=-1)
        to_aug = 1 - F.cosine_similarity(pred_ori.detach(), pred_aug, dim=-1)
    weights = weights.to(to_ori.dtype)
    return ((to_ori + to_aug) * weights).sum() / weights.sum().clamp_min(1)


class ASLPreTrainedModel(MaskedAutoencoderPreTrainedModel):
    """Base class: MAE initialisation for encoder, AEE layer and decoder."""

    config_class = ASLConfig
    base_model_prefix = "asl"


class ASLForPreTraining(ASLPreTrainedModel):
    """ASL pre-training: MAE with patch-level alignment of two feature branches of one masked view.

    Li, Zhu, Chen, Gao, Zhao, Zhao, Tang, Wang. "Self-Supervised Representation Learning from Arbitrary Scenarios",
    CVPR 2024. No public code exists; this follows the paper and its appendix (`shared/specs/asl.md`).

    One masked view is encoded by MAE's encoder. A feature augmentation turns the encoder output into a second branch:
    AEE (default) applies one extra Transformer layer with dropout 0.5 to the encoder output; DLE applies dropout to
    the patch embedding and runs the encoder twice with the same token mask. Both branches go through the shared MAE
    decoder in one batched pass; the loss is the MAE loss plus a patch-level L1 alignment of the two predictions on
    the hidden patches (the cls position is not aligned). Only the encoder (`self.backbone`, a stock `ViTModel`) is
    exported.

    Differences from the reference (the paper; every choice below is a config switch):
        - MAE loss on both branches, averaged (`mae_loss_on="both"`): the paper writes L_MAE + L_SEM only.
        - Alignment L1 reduction: mean over a patch's P values, then mean over hidden patches (`alignment_on`).
        - AEE dropout 0.5 is hidden dropout (after attention projection and MLP), attention dropout 0
          (`aee_hidden_dropout_prob`, `aee_attention_dropout_prob`); no LayerNorm after the AEE layer
          (`aee_final_layernorm`).
        - DLE dropout 0.1 on the patch-projection output before the position table (`dle_dropout_prob`).
        - norm_pix_loss True and mask ratio 0.75 (MAE's settings; not stated by the paper).
        - `align_cls=True` aligns the decoder's outputs at the cls position (the paper reports the ablation only).
        - The `asl-vits4-cifar` preset keeps MAE's random-resized crop (0.2-1) + flip; the appendix says "standard
          random cropping and horizontal flipping" for CIFAR. Its decoder depth (8) is not given by the paper.
        - With `feature_augmentation="none"` and `use_alignment=False` the model is exactly MAE (tested).
    """

    def __init__(self, config: ASLConfig):
        super().__init__(config)
        bb = config.backbone_config
        self._build_encoder_decoder(config)
        self.aee = None
        if config.feature_augmentation == "aee":
            self.aee = vit_block(
                bb.hidden_size,
                config.aee_num_attention_heads,
                4 * bb.hidden_size,
                hidden_act=bb.hidden_act,
                layer_norm_eps=bb.layer_norm_eps,
                qkv_bias=bb.qkv_bias,
                hidden_dropout=config.aee_hidden_dropout_prob,
                attention_dropout=config.aee_attention_dropout_prob,
                attn_implementation=bb._attn_implementation,
            )
        self.aee_norm = (
            nn.LayerNorm(bb.hidden_size, eps=bb.layer_norm_eps)
            if config.feature_augmentation == "aee" and config.aee_final_layernorm
            else None
        )
        self.dle_dropout = nn.Dropout(config.dle_dropout_prob) if config.feature_augmentation == "dle" else None
        self._finish_init()

    def encode_branches(self, pixel_values: Tensor, noise: Tensor | None, interpolate_pos_encoding: bool):
        """Encodes the masked view into one or two branches.

        Returns:
            latent `(V*B, 1+L_keep, D)` (V = 2 branches, original first, or 1 without feature augmentation) and the
            `MaskSample` of the original branch (both branches share it).
        """
        aug = self.config.feature_augmentation
        ratio = self.config.mask_ratio
        if aug == "dle":  # one token mask for both copies; independent dropout masks
            B = pixel_values.shape[0]
            if noise is None:
                noise = torch.rand(B, self.decoder.decoder_pos_embed.shape[1] - 1, device=pixel_values.device)
            latent, sample = encode_visible(
                self.backbone,
                torch.cat([pixel_values, pixel_values]),
                torch.cat([noise, noise]),
                ratio,
                interpolate_pos_encoding,
                patch_dropout=self.dle_dropout,
            )
            return latent, type(sample)(*(t[:B] for t in sample))
        latent, sample = encode_visible(self.backbone, pixel_values, noise, ratio, interpolate_pos_encoding)
        if aug == "aee":
            augmented = self.aee(latent, None)
            if self.aee_norm is not None:
                augmented = self.aee_norm(augmented)
            latent = torch.cat([latent, augmented])
        return latent, sample

    def forward(
        self,
        pixel_values: Tensor,
        noise: Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool = True,
    ) -> ASLPreTrainingOutput | tuple:
        config = self.config
        latent, sample = self.encode_branches(pixel_values, noise, interpolate_pos_encoding)  # (V*B, 1+L_keep, D)
        views = latent.shape[0] // pixel_values.shape[0]
        restore = sample.restore_indices.repeat(views, 1)
        pred = self.decoder(latent, restore, keep_cls=True).float()  # one batched pass: (V*B, 1+L, P)
        target = patchify(pixel_values, config.backbone_config.patch_size).float()
        if config.norm_pix_loss:
            target = normalize_per_patch(target)
        branches = pred[:, 1:].chunk(views)  # original first
        on = branches if config.mae_loss_on == "both" else branches[:1]
        loss_mae = sum(masked_mse(p, target, sample.mask) for p in on) / len(on)
        loss, loss_align = loss_mae, None
        if config.use_alignment and views == 2:
            weights = sample.mask if config.alignment_on == "masked" else torch.ones_like(sample.mask)
            ori, aug = pred.chunk(2)
            if config.align_cls:
                weights = torch.cat([torch.ones_like(weights[:, :1]), weights], dim=1)
            else:
                ori, aug = ori[:, 1:], aug[:, 1:]
            loss_align = asl_alignment_loss(ori, aug, weights, config.alignment_loss)
            loss = loss_mae + config.alignment_weight * loss_align
        out = ASLPreTrainingOutput(
            loss=loss,
            loss_mae=loss_mae,
            loss_align=loss_align,
            logits=branches[0],
            logits_aug=branches[1] if views == 2 else None,
            mask=sample.mask,
            restore_indices=sample.restore_indices,
        )
        return out if return_dict else out.to_tuple()
