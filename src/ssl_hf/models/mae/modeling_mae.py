"""MAE: masked autoencoding on a stock `ViTModel` encoder."""

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from transformers import ViTConfig, ViTModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput
from transformers.models.vit.modeling_vit import ViTLayer

from ...layers.masking import gather_tokens
from ...layers.patches import normalize_per_patch, patchify
from ...layers.pos_embed import sincos_2d
from ...layers.vit import encode_visible, init_mae_style
from ...losses.reconstruction import masked_mse
from ...modeling_base import SSLPreTrainedModel
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


class MAEDecoder(nn.Module):
    """MAE's light decoder: embed, insert mask tokens, un-shuffle, add fixed sin-cos positions, blocks, predict pixels.

    Module names follow `transformers.ViTMAEDecoder` so weights map one to one.
    """

    def __init__(self, config: MAEConfig):
        super().__init__()
        bb = config.backbone_config
        num_patches = (bb.image_size // bb.patch_size) ** 2
        layer_config = ViTConfig(
            hidden_size=config.decoder_hidden_size,
            num_attention_heads=config.decoder_num_attention_heads,
            intermediate_size=config.decoder_intermediate_size,
            hidden_act=bb.hidden_act,
            layer_norm_eps=bb.layer_norm_eps,
            qkv_bias=bb.qkv_bias,
        )
        # the decoder blocks use the attention kernel chosen for the encoder (sdpa by default)
        layer_config._attn_implementation = bb._attn_implementation
        self.decoder_embed = nn.Linear(bb.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.decoder_pos_embed = nn.Parameter(
            sincos_2d(config.decoder_hidden_size, int(num_patches**0.5)), requires_grad=False
        )
        self.decoder_layers = nn.ModuleList(ViTLayer(layer_config) for _ in range(config.decoder_num_hidden_layers))
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=bb.layer_norm_eps)
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, bb.patch_size**2 * bb.num_channels)

    def forward(self, latent: Tensor, restore_indices: Tensor) -> Tensor:
        """Predicts every patch from the visible-token latent.

        Args:
            latent: `(B, 1 + L_keep, D)` encoder output, cls first.
            restore_indices: `(B, L)` un-shuffle permutation.

        Returns:
            `(B, L, p*p*C)` predicted pixels.
        """
        x = self.decoder_embed(latent)
        B, L = restore_indices.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(B, L + 1 - x.shape[1], -1)
        patch_tokens = gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), restore_indices)
        x = torch.cat([x[:, :1], patch_tokens], dim=1) + self.decoder_pos_embed
        for layer in self.decoder_layers:
            x = layer(x, None)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class MAEPreTrainedModel(SSLPreTrainedModel):
    """Base class: MAE initialisation (xavier Linear layers, sin-cos tables, normal(0.02) tokens)."""

    config_class = MAEConfig
    base_model_prefix = "mae"
    _no_split_modules = ["ViTEmbeddings", "ViTLayer"]
    _fixed_parameters = ("backbone.embeddings.position_embeddings", "decoder.decoder_pos_embed")

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.backbone_config.initializer_range
        init_mae_style(module, std)
        if isinstance(module, MAEDecoder):
            init.normal_(module.mask_token, std=std)
            table = module.decoder_pos_embed
            init.copy_(table, sincos_2d(table.shape[-1], int((table.shape[1] - 1) ** 0.5)))


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
        self.backbone = ViTModel(config.backbone_config, add_pooling_layer=False)
        self.decoder = MAEDecoder(config)
        self.post_init()
        # post_init initialises a nested PreTrainedModel with its own `_init_weights`: apply MAE's init to the encoder.
        # (`transformers.initialization` functions skip tensors loaded from a checkpoint.)
        self.backbone.apply(partial(init_mae_style, initializer_range=config.backbone_config.initializer_range))
        self.freeze_fixed_parameters()

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
