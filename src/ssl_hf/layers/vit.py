"""MAE-style use of a stock `transformers.ViTModel`: visible-token encoding and paper initialisation.

The backbone stays a plain `ViTModel` (D1); these helpers only call its own sub-modules.
"""

import math

import torch
from torch import Tensor, nn
from transformers import ViTModel
from transformers import initialization as init
from transformers.models.vit.modeling_vit import ViTEmbeddings

from .mae_decoder import MAEDecoder
from .masking import MaskSample, gather_tokens, random_masking
from .pos_embed import sincos_2d


def encode_visible(
    vit: ViTModel,
    pixel_values: Tensor,
    noise: Tensor | None,
    mask_ratio: float,
    interpolate_pos_encoding: bool = False,
    patch_dropout: nn.Module | None = None,
    cls_token: Tensor | None = None,
    block_outputs: list[Tensor] | None = None,
) -> tuple[Tensor, MaskSample]:
    """Encodes only the visible patches: embeddings -> keep visible tokens -> blocks -> final norm.

    With `mask_ratio=0` and ascending `noise` this equals `vit(pixel_values).last_hidden_state` exactly.

    Args:
        vit: A stock `ViTModel`.
        pixel_values: `(B, C, H, W)`.
        noise: `(B, L)` masking scores (lower -> kept); uniform random when None.
        mask_ratio: Fraction of patches to hide.
        interpolate_pos_encoding: Interpolate the position table for inputs of another resolution.
        patch_dropout: Applied to the patch projections before the position table is added (ASL's DLE).
        cls_token: `(1, 1, D)` used instead of the encoder's own cls parameter (TEC's input adapter output).
        block_outputs: If a list is given, the raw output of every block is appended to it (before the final norm).

    Returns:
        latent `(B, 1 + L_keep, D)` (cls first, after the final norm) and the `MaskSample`.
    """
    emb = vit.embeddings
    B, _, H, W = pixel_values.shape
    patch_tokens = emb.patch_embeddings.projection(pixel_values.to(emb.cls_token.dtype)).flatten(2).transpose(1, 2)
    if interpolate_pos_encoding:
        pos = emb.interpolate_pos_encoding(torch.cat([emb.cls_token.expand(B, -1, -1), patch_tokens], 1), H, W)
    else:
        if tuple(emb.image_size) != (H, W):
            raise ValueError(
                f"Input images are {H}x{W} but the backbone was built for {emb.image_size[0]}x{emb.image_size[1]}; "
                "resize the images or pass interpolate_pos_encoding=True."
            )
        pos = emb.position_embeddings
    L = patch_tokens.shape[1]
    if patch_dropout is not None:
        patch_tokens = patch_dropout(patch_tokens)
    patch_tokens = patch_tokens + pos[:, 1:]
    if noise is None:
        noise = torch.rand(B, L, device=pixel_values.device)
    sample = random_masking(noise, int(L * (1 - mask_ratio)))
    visible = gather_tokens(patch_tokens, sample.keep_indices)
    cls_token = emb.cls_token if cls_token is None else cls_token
    hidden_states = emb.dropout(torch.cat([(cls_token + pos[:, :1]).expand(B, -1, -1), visible], dim=1))
    for layer in vit.layers:
        hidden_states = layer(hidden_states, None)
        if block_outputs is not None:
            block_outputs.append(hidden_states)
    return vit.layernorm(hidden_states), sample


def init_mae_style(module: nn.Module, initializer_range: float = 0.02) -> None:
    """MAE initialisation (`models_mae.py`), applied module by module from `_init_weights`.

    xavier-uniform Linear layers and patch projection (viewed as a Linear), zero biases, unit LayerNorms,
    normal(0.02) cls and mask tokens, and fixed 2-D sin-cos position tables (cls slot zero) in encoder and decoder.
    """
    if isinstance(module, nn.Linear):
        init.xavier_uniform_(module.weight)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        # MAE: "initialize patch_embed like nn.Linear (instead of nn.Conv2d)"
        fan_out, fan_in = module.weight.shape[0], module.weight[0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        init.uniform_(module.weight, -bound, bound)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, ViTEmbeddings):
        init.normal_(module.cls_token, std=initializer_range)
        table = module.position_embeddings
        init.copy_(table, sincos_2d(table.shape[-1], math.isqrt(table.shape[1] - 1)).to(table.dtype))
    elif isinstance(module, MAEDecoder):
        init.normal_(module.mask_token, std=initializer_range)
        table = module.decoder_pos_embed
        init.copy_(table, sincos_2d(table.shape[-1], math.isqrt(table.shape[1] - 1)).to(table.dtype))
