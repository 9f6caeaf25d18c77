"""MAE's light decoder and a stock-ViT-block factory, shared by MAE-style methods."""

import torch
from torch import Tensor, nn
from transformers import ViTConfig
from transformers.models.vit.modeling_vit import ViTLayer

from .masking import gather_tokens
from .pos_embed import sincos_2d


def vit_block(
    hidden_size: int,
    num_heads: int,
    intermediate_size: int,
    *,
    hidden_act: str = "gelu",
    layer_norm_eps: float = 1e-6,
    qkv_bias: bool = True,
    hidden_dropout: float = 0.0,
    attention_dropout: float = 0.0,
    attn_implementation: str | None = "sdpa",
) -> ViTLayer:
    """A stock pre-norm `ViTLayer` built from explicit sizes.

    `hidden_dropout` is applied after the attention projection and after the MLP; `attention_dropout` to the
    attention probabilities.
    """
    config = ViTConfig(
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps,
        qkv_bias=qkv_bias,
        hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout,
    )
    config._attn_implementation = attn_implementation
    return ViTLayer(config)


def block_style(encoder: ViTConfig) -> dict:
    """`vit_block` options that make decoder blocks follow the encoder (activation, eps, qkv bias, attention kernel)."""
    return dict(
        hidden_act=encoder.hidden_act,
        layer_norm_eps=encoder.layer_norm_eps,
        qkv_bias=encoder.qkv_bias,
        attn_implementation=encoder._attn_implementation,  # the kernel chosen for the encoder (sdpa default)
    )


def fill_hidden_patches(tokens: Tensor, mask_token: Tensor, restore_indices: Tensor) -> Tensor:
    """Appends a mask token for every hidden patch and puts the patches back in image order.

    Args:
        tokens: `(B, 1 + L_keep, D)` cls then visible tokens in shuffle order.
        mask_token: `(1, 1, D)`.
        restore_indices: `(B, L)` un-shuffle permutation.

    Returns:
        `(B, 1 + L, D)`: cls, then all L patches in image order.
    """
    B, L = restore_indices.shape
    mask_tokens = mask_token.to(tokens.dtype).expand(B, L + 1 - tokens.shape[1], -1)
    patch_tokens = gather_tokens(torch.cat([tokens[:, 1:], mask_tokens], dim=1), restore_indices)
    return torch.cat([tokens[:, :1], patch_tokens], dim=1)


class MAEDecoder(nn.Module):
    """MAE's decoder: embed, insert mask tokens, un-shuffle, add fixed sin-cos positions, blocks, predict pixels.

    Module names follow `transformers.ViTMAEDecoder`, so weights map one to one.

    Args:
        encoder: Config of the ViT encoder (width, patch grid, activation, LayerNorm eps, attention kernel).
        hidden_size: Decoder width.
        num_layers: Decoder depth.
        num_heads: Decoder attention heads.
        intermediate_size: Decoder MLP width.
    """

    def __init__(self, encoder: ViTConfig, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int):
        super().__init__()
        grid = encoder.image_size // encoder.patch_size
        block = block_style(encoder)
        self.decoder_embed = nn.Linear(encoder.hidden_size, hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.decoder_pos_embed = nn.Parameter(sincos_2d(hidden_size, grid), requires_grad=False)
        self.decoder_layers = nn.ModuleList(
            vit_block(hidden_size, num_heads, intermediate_size, **block) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_size, eps=encoder.layer_norm_eps)
        self.decoder_pred = nn.Linear(hidden_size, encoder.patch_size**2 * encoder.num_channels)

    def forward(self, latent: Tensor, restore_indices: Tensor, keep_cls: bool = False) -> Tensor:
        """Predicts every patch from the visible-token latent.

        Args:
            latent: `(B, 1 + L_keep, D)` encoder output, cls first.
            restore_indices: `(B, L)` un-shuffle permutation.
            keep_cls: Also return the prediction at the cls position (first row).

        Returns:
            `(B, L, p*p*C)` predicted pixels (`(B, 1 + L, p*p*C)` with `keep_cls`).
        """
        x = fill_hidden_patches(self.decoder_embed(latent), self.mask_token, restore_indices) + self.decoder_pos_embed
        for layer in self.decoder_layers:
            x = layer(x, None)
        pred = self.decoder_pred(self.decoder_norm(x))
        return pred if keep_cls else pred[:, 1:]
