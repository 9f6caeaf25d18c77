"""timm-style ViT state dicts -> transformers `ViTModel` (with cls token) or `SiglipVisionModel` (without).

The timm layout (MAE `models_mae.py`, DINO `vision_transformer.py`, iBOT `models/vision_transformer.py`, TEC
`models/models_vit.py`, SelfPatch `selfpatch_vision_transformer.py`): `cls_token (1, 1, D)`, `pos_embed (1, [1 +] N,
D)` (row 0 = cls), `patch_embed.proj` (a `p x p` stride-`p` convolution), pre-norm `blocks.i` with `norm1`, a fused
`attn.qkv (3D, D)` whose rows are q, k, v and, inside each, head-major (`reshape(B, N, 3, H, D / H)`), `attn.proj`,
`norm2`, `mlp.fc1` / `mlp.fc2` with exact GELU, and a final `norm`; LayerNorm eps 1e-6. transformers' `ViTModel` and
`SiglipVisionModel` compute the same function with q, k, v as three projections (split along the rows of `qkv`).
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTModel

from ..backbones import backbone_config, cls_free_vit_config
from .layouts import HEADS_BY_WIDTH, ConversionError, preview


@dataclass
class TimmViT:
    """A timm-style ViT read from a state dict: its shapes and the tensors that need more than a rename.

    Attributes:
        prefix: Key prefix of the encoder in the state dict.
        hidden_size: Width D.
        num_hidden_layers: Depth.
        intermediate_size: MLP width.
        patch_size: Patch side p.
        num_channels: Input channels.
        grid: Patches per side of the position table.
        qkv_bias: Whether `attn.qkv` has a bias.
        cls_token: `(1, 1, D)` cls token (TEC's input adapter folded in), or None for a ViT without cls token.
        cls_position: `(1, 1, D)` position row of the cls token (zeros when the table has none), or None.
        patch_positions: `(1, N, D)` position rows of the patches.
        final_norm: `(weight, bias)` of the final LayerNorm, or None when the state dict has no `norm`.
        consumed: Keys of the state dict that the conversion uses.
        notes: What the conversion had to do beyond renaming (for the model card).
    """

    prefix: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    patch_size: int
    num_channels: int
    grid: int
    qkv_bias: bool
    cls_token: Tensor | None
    cls_position: Tensor | None
    patch_positions: Tensor
    final_norm: tuple[Tensor, Tensor] | None
    consumed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


_BLOCK_KEYS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
# transformers names of the block parts: ViTModel and SiglipVisionModel (in-memory names of transformers 5)
_VIT_NAMES = {
    "block": "layers.{i}.",
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "q": "attention.q_proj",
    "k": "attention.k_proj",
    "v": "attention.v_proj",
    "proj": "attention.o_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
    "patch": "embeddings.patch_embeddings.projection",
    "final": "layernorm",
}
_SIGLIP_NAMES = {
    **_VIT_NAMES,
    "block": "encoder.layers.{i}.",
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "proj": "self_attn.out_proj",
    "patch": "embeddings.patch_embedding",
    "final": "post_layernorm",
}


def read_timm_vit(state_dict: dict[str, Tensor], prefix: str = "") -> TimmViT:
    """Reads the architecture of a timm-style ViT from its tensor shapes and checks that every tensor is there.

    TEC pre-training checkpoints keep the input adapter (`cls_token_mlp`): it is folded into the cls token as TEC's
    `weight_convert.py` does (`cls_token = cls_token_mlp(cls_token)`). A position table without a cls row (timm's
    `no_embed_class`) gets a zero cls row, which computes the same.

    Args:
        state_dict: `{name: tensor}` holding the encoder under `prefix`.
        prefix: Key prefix of the encoder, matched at the start of keys (e.g. `backbone.`).

    Raises:
        ConversionError: No timm-style ViT under `prefix`, or tensors missing.
    """
    p = prefix
    patch_weight = state_dict.get(f"{p}patch_embed.proj.weight")
    if patch_weight is None or patch_weight.ndim != 4:
        raise ConversionError(f"No timm-style ViT at '{p}': `{p}patch_embed.proj.weight` (D, C, p, p) is missing.")
    width, channels, patch, patch_w = patch_weight.shape
    if patch != patch_w:
        raise ConversionError(f"Non-square patches ({patch}x{patch_w}) are not supported.")
    indices = (k[len(p) + 7 :].split(".")[0] for k in state_dict if k.startswith(f"{p}blocks."))
    depth = 1 + max((int(i) for i in indices if i.isdigit()), default=-1)
    qkv_bias = f"{p}blocks.0.attn.qkv.bias" in state_dict
    required = [f"{p}pos_embed"] + [
        f"{p}blocks.{i}.{name}" for i in range(depth) for name in (*_BLOCK_KEYS, *(("attn.qkv.bias",) * qkv_bias))
    ]
    if f"{p}norm.weight" in state_dict or f"{p}norm.bias" in state_dict:
        required += [f"{p}norm.weight", f"{p}norm.bias"]
    missing = [k for k in required if k not in state_dict]
    if depth == 0 or missing:
        shown = preview(missing)
        raise ConversionError(
            f"The ViT at '{p}' is incomplete: missing {shown or 'every block'}. The file is damaged or was saved "
            "from a model with another layout."
        )
    consumed = {f"{p}patch_embed.proj.weight", *required}
    notes: list[str] = []
    cls_token = state_dict.get(f"{p}cls_token")
    if cls_token is not None:
        consumed.add(f"{p}cls_token")
        cls_token = _fold_input_adapter(state_dict, p, cls_token, consumed, notes)
    positions = state_dict[f"{p}pos_embed"]
    if positions.shape[-1] != width:
        raise ConversionError(f"`{p}pos_embed` is {positions.shape[-1]} wide but the patch embedding {width}.")
    positions = positions.reshape(-1, width)
    rows = positions.shape[0]
    has_cls_row = int(cls_token is not None and _is_square(rows - 1))  # 1: row 0 belongs to the cls token
    grid = math.isqrt(rows - has_cls_row)
    if grid * grid != rows - has_cls_row:
        raise ConversionError(f"`{p}pos_embed` has {rows} rows: not a square patch grid (with or without a cls row).")
    cls_position = None
    if cls_token is not None:
        cls_position = positions[:1] if has_cls_row else torch.zeros(1, width, dtype=positions.dtype)
        if not has_cls_row:
            notes.append("the position table has no cls row: the cls token gets a zero position row (same result).")
    final_norm = None
    if f"{p}norm.weight" in state_dict:
        final_norm = (state_dict[f"{p}norm.weight"], state_dict[f"{p}norm.bias"])
    bias = state_dict.get(f"{p}patch_embed.proj.bias")
    if bias is not None:
        consumed.add(f"{p}patch_embed.proj.bias")
    return TimmViT(
        prefix=p,
        hidden_size=width,
        num_hidden_layers=depth,
        intermediate_size=state_dict[f"{p}blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=patch,
        num_channels=channels,
        grid=grid,
        qkv_bias=qkv_bias,
        cls_token=None if cls_token is None else cls_token.reshape(1, 1, width),
        cls_position=None if cls_position is None else cls_position.reshape(1, 1, width),
        patch_positions=positions[has_cls_row:].reshape(1, -1, width),
        final_norm=final_norm,
        consumed=consumed,
        notes=notes,
    )


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _fold_input_adapter(state: dict, p: str, cls_token: Tensor, consumed: set[str], notes: list[str]) -> Tensor:
    """TEC's input adapter (`cls_token_mlp`, fc1 -> exact GELU -> fc2) applied once to the cls parameter."""
    names = [f"{p}cls_token_mlp.{layer}.{kind}" for layer in ("fc1", "fc2") for kind in ("weight", "bias")]
    if not any(n in state for n in names):
        return cls_token
    if not all(n in state for n in names):
        raise ConversionError(f"`{p}cls_token_mlp` (TEC's input adapter) is incomplete: it needs {', '.join(names)}.")
    consumed.update(names)
    notes.append(
        "TEC's input adapter (`cls_token_mlp`) was folded into the cls token, as TEC's weight_convert.py does."
    )
    with torch.no_grad():
        hidden = F.gelu(F.linear(cls_token.float(), state[names[0]].float(), state[names[1]].float()))
        return F.linear(hidden, state[names[2]].float(), state[names[3]].float()).to(cls_token.dtype)


def resolve_heads(width: int, num_attention_heads: int | None = None) -> int:
    """Attention heads: the given number, else the standard one of the width (`HEADS_BY_WIDTH`).

    Raises:
        ConversionError: Non-standard width without `num_attention_heads`, or heads that do not divide the width.
    """
    heads = num_attention_heads or HEADS_BY_WIDTH.get(width)
    if heads is None:
        standard = ", ".join(f"{w} -> {h}" for w, h in HEADS_BY_WIDTH.items())
        raise ConversionError(
            f"Width {width} is not a standard ViT width ({standard}) and the state dict does not store the number of "
            "attention heads: pass --num_attention_heads (num_attention_heads=) with the value of the source model."
        )
    if width % heads:
        raise ConversionError(f"{heads} attention heads do not divide the width {width}.")
    return heads


def timm_vit_config(vit: TimmViT, num_attention_heads: int | None = None, image_size: int | None = None) -> ViTConfig:
    """The `ViTConfig` of a ViT read by `read_timm_vit` (eps 1e-6, exact GELU; input side from the grid unless given)."""
    size = image_size or vit.grid * vit.patch_size
    try:
        return backbone_config(
            "vit-base",  # any ViT preset: every field but eps 1e-6 and exact GELU is overridden below
            size,
            vit.patch_size,
            hidden_size=vit.hidden_size,
            num_hidden_layers=vit.num_hidden_layers,
            num_attention_heads=resolve_heads(vit.hidden_size, num_attention_heads),
            intermediate_size=vit.intermediate_size,
            qkv_bias=vit.qkv_bias,
            num_channels=vit.num_channels,
        )
    except ValueError as err:
        if isinstance(err, ConversionError):
            raise
        raise ConversionError(f"--image_size {size}: {err}") from err


def _patch_positions(vit: TimmViT, image_size: int) -> Tensor:
    """The patch position rows, resized (bicubic, as transformers' `interpolate_pos_encoding`) to another input size."""
    side = image_size // vit.patch_size
    if side == vit.grid:
        return vit.patch_positions
    vit.notes.append(
        f"the {vit.grid}x{vit.grid} position table was resized to {side}x{side} (bicubic, align_corners=False, as "
        f"transformers' interpolate_pos_encoding) for {image_size}px inputs."
    )
    table = vit.patch_positions.float().reshape(1, vit.grid, vit.grid, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(side, side), mode="bicubic", align_corners=False)
    return table.permute(0, 2, 3, 1).reshape(1, side * side, -1).to(vit.patch_positions.dtype)


def _encoder_weights(vit: TimmViT, state: dict[str, Tensor], names: dict[str, str], qkv_bias: bool) -> dict:
    """Patch embedding, blocks and final norm under transformers' `names` (q, k, v split from the fused qkv rows)."""
    p, width = vit.prefix, vit.hidden_size
    weight = state[f"{p}patch_embed.proj.weight"]
    out = {
        f"{names['patch']}.weight": weight,
        f"{names['patch']}.bias": state.get(f"{p}patch_embed.proj.bias", torch.zeros(width, dtype=weight.dtype)),
    }
    for i in range(vit.num_hidden_layers):
        out.update(block_weights(state, f"{p}blocks.{i}.", names["block"].format(i=i), qkv_bias, names))
    norm = vit.final_norm or (torch.ones(width, dtype=weight.dtype), torch.zeros(width, dtype=weight.dtype))
    out[f"{names['final']}.weight"], out[f"{names['final']}.bias"] = norm
    return {k: v.clone() for k, v in out.items()}  # own storage: no views into the (possibly large) checkpoint


def block_weights(
    state: dict[str, Tensor], src: str, dst: str, qkv_bias: bool = True, names: dict[str, str] | None = None
) -> dict[str, Tensor]:
    """One timm-style pre-norm block (keys under `src`) as a transformers `ViTLayer` (keys under `dst`).

    q, k and v are the row blocks of the fused `attn.qkv` (zero biases when the source has none and `qkv_bias`).
    Also used for MAE's decoder blocks (`decoder_blocks.i.`), which have the encoder's layout.
    """
    names = names or _VIT_NAMES
    out = {}
    qkv_weight = state[f"{src}attn.qkv.weight"]
    qkv = state.get(f"{src}attn.qkv.bias", torch.zeros(qkv_weight.shape[0], dtype=qkv_weight.dtype))
    for part, rows, bias in zip(("q", "k", "v"), qkv_weight.chunk(3, dim=0), qkv.chunk(3, dim=0)):
        out[f"{dst}{names[part]}.weight"] = rows
        if qkv_bias:
            out[f"{dst}{names[part]}.bias"] = bias
    for ours, theirs in (("proj", "attn.proj"), ("norm1", "norm1"), ("norm2", "norm2")):
        out[f"{dst}{names[ours]}.weight"] = state[f"{src}{theirs}.weight"]
        out[f"{dst}{names[ours]}.bias"] = state[f"{src}{theirs}.bias"]
    for layer in ("fc1", "fc2"):
        out[f"{dst}{names[layer]}.weight"] = state[f"{src}mlp.{layer}.weight"]
        out[f"{dst}{names[layer]}.bias"] = state[f"{src}mlp.{layer}.bias"]
    return out


def timm_vit_to_hf(
    state_dict: dict[str, Tensor],
    prefix: str = "",
    *,
    num_attention_heads: int | None = None,
    image_size: int | None = None,
) -> tuple[dict[str, Tensor], ViTConfig]:
    """Maps a timm-style ViT (keys under `prefix`) to transformers `ViTModel` weights and config (public API, stable).

    Reads width, depth, MLP width, patch size, channels, position grid and qkv bias from the shapes; the heads come
    from `HEADS_BY_WIDTH` unless given. The config has LayerNorm eps 1e-6 and exact GELU (the timm ViTs'). Keys that
    are not part of the encoder (decoders, heads, other prefixes) are ignored. Without a final `norm` (released TEC
    files), `layernorm` gets weight 1 and bias 0: the tokens are standardised without learnt scale and shift, as the
    freshly built norm of the source's fine-tuning code would do.

    Args:
        state_dict: `{name: tensor}` (e.g. from `load_official_state_dict`).
        prefix: Key prefix of the encoder, matched at the start of keys (`""`, `backbone.`, ...).
        num_attention_heads: Heads, when the width is not a standard one (or differs from the standard).
        image_size: Input side; defaults to the position grid times the patch size. Another size resizes the patch
            position table (bicubic, as transformers' `interpolate_pos_encoding`).

    Returns:
        The weights of `ViTModel(config, add_pooling_layer=False)` (in-memory names) and its `ViTConfig`.

    Raises:
        ConversionError: No timm-style ViT with cls token under `prefix`, missing tensors, or unknown heads.
    """
    return vit_weights(read_timm_vit(state_dict, prefix), state_dict, num_attention_heads, image_size)


def vit_weights(
    vit: TimmViT, state_dict: dict[str, Tensor], num_attention_heads: int | None = None, image_size: int | None = None
) -> tuple[dict[str, Tensor], ViTConfig]:
    """`timm_vit_to_hf` for a ViT already read by `read_timm_vit` (its `notes` collect what the conversion did)."""
    if vit.cls_token is None:
        raise ConversionError(
            f"The ViT at '{vit.prefix}' has no cls token (`{vit.prefix}cls_token`): it is a cls-free ViT such as "
            "SelfPatch's; convert it with --from selfpatch (`cls_free_vit_to_hf`)."
        )
    config = timm_vit_config(vit, num_attention_heads, image_size)
    weights = _encoder_weights(vit, state_dict, _VIT_NAMES, vit.qkv_bias)
    positions = torch.cat([vit.cls_position, _patch_positions(vit, config.image_size)], dim=1)
    weights["embeddings.cls_token"] = vit.cls_token.clone()
    weights["embeddings.position_embeddings"] = positions.clone()
    return weights, config


def cls_free_vit_to_hf(
    state_dict: dict[str, Tensor],
    prefix: str = "",
    *,
    num_attention_heads: int | None = None,
    image_size: int | None = None,
    final_norm: tuple[Tensor, Tensor] | None = None,
) -> tuple[dict[str, Tensor], SiglipVisionConfig]:
    """Maps a timm-style ViT without cls token (SelfPatch's backbone) to a transformers `SiglipVisionModel`.

    The export ssl_hf writes for its own SelfPatch runs (`backbones.cls_free_vit_config`): patch tokens only, learned
    positions, pre-norm blocks, final LayerNorm (`post_layernorm`), no attention-pooling head. q, k and v always have
    biases in `SiglipVisionModel`: zeros when the source has none.

    Args:
        state_dict: `{name: tensor}`.
        prefix: Key prefix of the encoder.
        num_attention_heads: Heads, when the width is not a standard one.
        image_size: Input side (default: the position grid times the patch size).
        final_norm: `(weight, bias)` of the final LayerNorm when it lives outside the encoder (SelfPatch's
            `ca_head.norm`); else the encoder's `norm`, else weight 1 and bias 0.

    Returns:
        The weights of `SiglipVisionModel(config)` and its `SiglipVisionConfig`.
    """
    vit = read_timm_vit(state_dict, prefix)
    return cls_free_vit_weights(vit, state_dict, num_attention_heads, image_size, final_norm)


def cls_free_vit_weights(
    vit: TimmViT,
    state_dict: dict[str, Tensor],
    num_attention_heads: int | None = None,
    image_size: int | None = None,
    final_norm: tuple[Tensor, Tensor] | None = None,
) -> tuple[dict[str, Tensor], SiglipVisionConfig]:
    """`cls_free_vit_to_hf` for a ViT already read by `read_timm_vit`."""
    if vit.cls_token is not None:
        raise ConversionError(
            f"The ViT at '{vit.prefix}' has a cls token: convert it as a ViTModel (`timm_vit_to_hf`)."
        )
    if final_norm is not None:
        vit.final_norm = final_norm
    config = cls_free_vit_config(timm_vit_config(vit, num_attention_heads, image_size))
    weights = _encoder_weights(vit, state_dict, _SIGLIP_NAMES, qkv_bias=True)
    weights["embeddings.position_embedding.weight"] = _patch_positions(vit, config.image_size)[0].clone()
    return weights, config


def build_encoder(weights: dict[str, Tensor], config: ViTConfig | SiglipVisionConfig) -> ViTModel | SiglipVisionModel:
    """The transformers model of converted weights, loaded strictly (eval mode, float32 as the sources)."""
    model = ViTModel(config, add_pooling_layer=False) if isinstance(config, ViTConfig) else SiglipVisionModel(config)
    try:
        model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    except RuntimeError as err:
        raise ConversionError(f"The converted weights do not fit {type(model).__name__}: {err}") from err
    return model.eval()
