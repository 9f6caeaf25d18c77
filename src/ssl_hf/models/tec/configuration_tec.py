"""TEC configuration."""

from typing import Literal

from huggingface_hub.dataclasses import strict

from ...configuration_base import MaskedImageConfig


@strict
class TECConfig(MaskedImageConfig):
    """Configuration of `TECForPreTraining`: a new ViT learns from a frozen, pretrained base model.

    Gao, Zhou, Cheng, Yan. "Towards Sustainable Self-supervised Learning", arXiv 2210.11016.

    Masking and decoder fields as in `MaskedImageConfig`, with TEC's defaults (shared decoder of 2 blocks, 512 wide,
    16 heads). The defaults are the ViT-B/16 setting with an MAE base (Tab. 14: tau 1.8, top-15).

    Args:
        base_model: Path or Hub id of the base model: an `ssl-hf export` folder (`vit` or `dinov2` format), a
            `transformers` `ViTModel` / `ViTMAEModel` / `Dinov2Model` checkpoint, an ssl_hf pre-training checkpoint (its
            exported encoder is used), or an official MAE / iBOT / DINO / TEC `.pth` file (a timm-style ViT, converted
            in memory by `ssl_hf.convert`). It is frozen and never saved with this model; resuming reloads it.
        base_model_revision: Hub revision of `base_model`.
        base_hidden_size: Width C_t of the base model (filled from its config when the model is built).
        base_num_attention_heads: Heads H_t of the base model (filled from its config when the model is built).
        base_num_hidden_layers: Depth of the base model (filled from its config; checked when it is loaded).
        use_input_adapter: Input adapter: an MLP (C -> 4C -> C) on the cls parameter, folded into it on export.
        use_encoder_adapter: Encoder adapter: fuse the outputs of all blocks in groups (FC + residual MLP, summed).
            False feeds the final-norm encoder output to the decoder (Tab. 11b "none").
        adapter_group_size: Consecutive blocks per encoder-adapter group (3).
        encoder_adapter_intermediate_size: Hidden width of each group's MLP (default 4 x decoder_hidden_size).
        target_norm: Normalise the feature target over `"patch"`es (default), over `"channel"`s, or `"none"`.
        teacher_last_layers: Number of last base-model blocks averaged into the feature target (2).
        use_attention_target: Add the semantic attention loss.
        attention_target_mode: Attention rows: `"select"` (cls + top-k patches, default), `"cls_only"`, `"all"`.
        attention_topk: k, patches the base model's cls token attends to most (15 for ViT-B/16 with an MAE base).
        attention_tau: Temperature of the target attention softmax (1.8 with an MAE base).
        attention_scale: Scale of the predicted logits: `"full"` = C_t^-0.5 (official code, default) or
            `"head"` = (C_t / H_t)^-0.5.
        init_from_base: Start the new model from the base model's weights (Tab. 11c; worse, off by default).
        loss_weight_feature: Weight of the feature loss.
        loss_weight_attention: Weight of the attention loss.
    """

    model_type = "ssl_tec"

    decoder_num_hidden_layers: int = 2
    base_model: str | None = None
    base_model_revision: str | None = None
    base_hidden_size: int | None = None
    base_num_attention_heads: int | None = None
    base_num_hidden_layers: int | None = None
    use_input_adapter: bool = True
    use_encoder_adapter: bool = True
    adapter_group_size: int = 3
    encoder_adapter_intermediate_size: int | None = None
    target_norm: Literal["patch", "channel", "none"] = "patch"
    teacher_last_layers: int = 2
    use_attention_target: bool = True
    attention_target_mode: Literal["select", "cls_only", "all"] = "select"
    attention_topk: int = 15
    attention_tau: float = 1.8
    attention_scale: Literal["full", "head"] = "full"
    init_from_base: bool = False
    loss_weight_feature: float = 1.0
    loss_weight_attention: float = 1.0

    def validate_tec(self):
        layers = self.backbone_config.num_hidden_layers
        if self.use_encoder_adapter and (self.adapter_group_size < 1 or layers % self.adapter_group_size):
            raise ValueError(
                f"adapter_group_size={self.adapter_group_size} must divide num_hidden_layers={layers} "
                "(the encoder adapter fuses consecutive blocks in equal groups)."
            )
        if self.teacher_last_layers < 1:
            raise ValueError(f"teacher_last_layers must be >= 1, got {self.teacher_last_layers}")
        if self.base_num_hidden_layers is not None and self.teacher_last_layers > self.base_num_hidden_layers:
            raise ValueError(
                f"teacher_last_layers={self.teacher_last_layers} exceeds the base model's "
                f"{self.base_num_hidden_layers} blocks."
            )
        num_patches = (self.backbone_config.image_size // self.backbone_config.patch_size) ** 2
        if self.attention_target_mode == "select" and not 1 <= self.attention_topk <= num_patches:
            raise ValueError(
                f"attention_topk must be in [1, {num_patches}] (the patch count), got {self.attention_topk}"
            )
        if self.attention_tau <= 0:
            raise ValueError(f"attention_tau must be > 0, got {self.attention_tau}")
        if min(self.loss_weight_feature, self.loss_weight_attention) < 0:
            raise ValueError("loss weights must be >= 0")
        if (
            self.base_hidden_size
            and self.base_num_attention_heads
            and self.base_hidden_size % self.base_num_attention_heads
        ):
            raise ValueError(
                f"base_hidden_size={self.base_hidden_size} is not divisible by "
                f"base_num_attention_heads={self.base_num_attention_heads}"
            )

    @property
    def target_hidden_size(self) -> int:
        """C_t: width of the predicted targets (the base model's width)."""
        return self.base_hidden_size or self.backbone_config.hidden_size

    @property
    def target_num_heads(self) -> int:
        """H_t: heads of the attention target (the base model's)."""
        return self.base_num_attention_heads or self.backbone_config.num_attention_heads

    @property
    def adapter_intermediate_size(self) -> int:
        return self.encoder_adapter_intermediate_size or 4 * self.decoder_hidden_size
