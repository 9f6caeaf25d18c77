"""ASL configuration."""

from typing import Literal

from huggingface_hub.dataclasses import strict

from ...configuration_base import MaskedAutoencoderConfig


@strict
class ASLConfig(MaskedAutoencoderConfig):
    """Configuration of `ASLForPreTraining`: MAE plus patch-level consistency between two feature branches.

    Li et al., "Self-Supervised Representation Learning from Arbitrary Scenarios", CVPR 2024.

    MAE fields (`backbone_config`, `mask_ratio`, `norm_pix_loss`, `decoder_*`) as in `MAEConfig`; choices marked [I]
    are not stated in the paper (no public code exists) and are listed in `ASLForPreTraining`'s docstring.

    Args:
        feature_augmentation: Branch generator: `"aee"` (one extra Transformer layer with heavy dropout on the
            encoder output, default), `"dle"` (dropout in the patch embedding, encoder run twice), `"none"` (plain MAE).
        use_alignment: Add the patch-level alignment loss (Tab. 7 rows c/e); False decodes both branches with the
            MAE loss only (rows b/d).
        alignment_loss: `"l1"` (Eq. 9, default) or `"cosine"` (ablation of Sec. 4.6).
        alignment_weight: lambda_sem, weight of the alignment loss (1 in the paper).
        alignment_on: `"masked"` patches only (Eq. 10, default) or `"all"` patches. [I: switch]
        align_cls: Also align the decoder output at the cls position (hurts in Sec. 4.6; default False).
        mae_loss_on: Reconstruction loss on `"both"` branches, averaged (default [I]), or only the `"ori"` branch.
        aee_num_attention_heads: Heads of the AEE layer (4 in the paper's appendix).
        aee_hidden_dropout_prob: Dropout after the AEE layer's attention projection and MLP (0.5 [S]; placement [I]).
        aee_attention_dropout_prob: Dropout on the AEE attention probabilities (0 [I]).
        aee_final_layernorm: LayerNorm after the AEE layer (False [I]).
        dle_dropout_prob: DLE dropout on the patch-projection output, before the position table is added (0.1 [I]).
    """

    model_type = "ssl_asl"

    feature_augmentation: Literal["aee", "dle", "none"] = "aee"
    use_alignment: bool = True
    alignment_loss: Literal["l1", "cosine"] = "l1"
    alignment_weight: float = 1.0
    alignment_on: Literal["masked", "all"] = "masked"
    align_cls: bool = False
    mae_loss_on: Literal["both", "ori"] = "both"
    aee_num_attention_heads: int = 4
    aee_hidden_dropout_prob: float = 0.5
    aee_attention_dropout_prob: float = 0.0
    aee_final_layernorm: bool = False
    dle_dropout_prob: float = 0.1

    def validate_asl(self):
        if self.feature_augmentation not in ("aee", "dle", "none"):
            raise ValueError(f"feature_augmentation must be aee, dle or none, got '{self.feature_augmentation}'")
        if self.feature_augmentation == "none" and self.use_alignment:
            raise ValueError(
                "use_alignment=True needs two branches: set feature_augmentation to 'aee' or 'dle', "
                "or use_alignment=False for plain MAE."
            )
        if self.backbone_config.hidden_size % self.aee_num_attention_heads:
            raise ValueError(
                f"hidden_size={self.backbone_config.hidden_size} is not divisible by "
                f"aee_num_attention_heads={self.aee_num_attention_heads}"
            )
        for name in ("aee_hidden_dropout_prob", "aee_attention_dropout_prob", "dle_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.alignment_weight < 0:
            raise ValueError(f"alignment_weight must be >= 0, got {self.alignment_weight}")
