"""MAE configuration."""

from huggingface_hub.dataclasses import strict
from transformers import ViTMAEConfig

from ...configuration_base import MaskedAutoencoderConfig


@strict
class MAEConfig(MaskedAutoencoderConfig):
    """Configuration of `MAEForPreTraining` (He et al., "Masked Autoencoders Are Scalable Vision Learners", 2022).

    Fields (`backbone_config`, `mask_ratio`, `norm_pix_loss`, `decoder_*`) and their checks are those of
    `MaskedAutoencoderConfig`; the defaults are the paper's ViT-B/16 setting.
    """

    model_type = "ssl_mae"

    def to_vit_mae_config(self) -> ViTMAEConfig:
        """The equivalent `transformers.ViTMAEConfig`.

        `ViTMAEForPreTraining` with it computes the same loss from the same weights (encoder keys `backbone.*` ->
        `vit.*`, decoder keys unchanged).
        """
        bb = self.backbone_config
        return ViTMAEConfig(
            hidden_size=bb.hidden_size,
            num_hidden_layers=bb.num_hidden_layers,
            num_attention_heads=bb.num_attention_heads,
            intermediate_size=bb.intermediate_size,
            hidden_act=bb.hidden_act,
            layer_norm_eps=bb.layer_norm_eps,
            qkv_bias=bb.qkv_bias,
            image_size=bb.image_size,
            patch_size=bb.patch_size,
            num_channels=bb.num_channels,
            decoder_hidden_size=self.decoder_hidden_size,
            decoder_num_hidden_layers=self.decoder_num_hidden_layers,
            decoder_num_attention_heads=self.decoder_num_attention_heads,
            decoder_intermediate_size=self.decoder_intermediate_size,
            mask_ratio=self.mask_ratio,
            norm_pix_loss=self.norm_pix_loss,
        )
