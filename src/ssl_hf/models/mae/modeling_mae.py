"""MAE: masked autoencoding on a stock `ViTModel` encoder."""

from dataclasses import dataclass

from torch import Tensor
from transformers.modeling_outputs import ModelOutput

from ...layers.patches import normalize_per_patch, patchify
from ...layers.vit import encode_visible
from ...losses.reconstruction import masked_mse
from ...modeling_base import MaskedAutoencoderPreTrainedModel
from .configuration_mae import MAEConfig


@dataclass
class MAEPreTrainingOutput(ModelOutput):
    """Output of `MAEForPreTraining`.

    Args:
        loss: Normalised-pixel MSE on hidden patches.
        logits: `(B, L, p*p*C)` predicted patches.
        mask: `(B, L)` bool, True = hidden.
        restore_indices: `(B, L)` un-shuffle permutation.
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    mask: Tensor | None = None
    restore_indices: Tensor | None = None


class MAEPreTrainedModel(MaskedAutoencoderPreTrainedModel):
    """Base class: MAE initialisation (xavier Linear layers, sin-cos tables, normal(0.02) tokens)."""

    config_class = MAEConfig
    base_model_prefix = "mae"


class MAEForPreTraining(MAEPreTrainedModel):
    """MAE pre-training: a ViT encoder sees the visible 25 % of patches, a light decoder regresses the hidden ones.

    He, Chen, Xie, Li, Dollár, Girshick. "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
    Reference code: https://github.com/facebookresearch/mae (`models_mae.py`, commit efb2a80).

    The encoder is a stock `transformers.ViTModel` (`self.backbone`); `ssl-hf export` saves it as is.

    Differences from the reference:
        - The position table is a frozen `nn.Parameter` inside `ViTModel.embeddings` (reference: a buffer-like
          parameter too); it is exported so stock `ViTModel` loads it.
        - Masking may be driven by `noise` produced in the data pipeline (per-sample seeded), which makes a run
          independent of the number of processes and exactly resumable; same distribution as the reference.
    """

    def __init__(self, config: MAEConfig):
        super().__init__(config)
        self._build_encoder_decoder(config)
        self._finish_init()

    def forward(
        self,
        pixel_values: Tensor,
        noise: Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool = True,
    ) -> MAEPreTrainingOutput | tuple:
        latent, sample = encode_visible(
            self.backbone, pixel_values, noise, self.config.mask_ratio, interpolate_pos_encoding
        )  # (B, 1+L_keep, D)
        pred = self.decoder(latent, sample.restore_indices)  # (B, L, p*p*C)
        target = patchify(pixel_values, self.config.backbone_config.patch_size)
        if self.config.norm_pix_loss:
            target = normalize_per_patch(target)
        loss = masked_mse(pred.float(), target.float(), sample.mask)
        out = MAEPreTrainingOutput(loss=loss, logits=pred, mask=sample.mask, restore_indices=sample.restore_indices)
        return out if return_dict else out.to_tuple()
