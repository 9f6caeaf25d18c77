"""`ssl-hf convert --full`: a released training checkpoint -> a `save_pretrained` folder of the ssl_hf pre-training model.

The output (`config.json`, `model.safetensors`, `conversion.json`) loads with `AutoModelForPreTraining` after
`import ssl_hf` and starts a new run with `ssl-hf pretrain --method M --init_from DIR`. Layouts, read from the
projects' code (nothing copied):

- MAE, facebookresearch/mae `models_mae.py` (`MaskedAutoencoderViT`: `decoder_embed`, `mask_token`,
  `decoder_pos_embed`, `decoder_blocks.i` in the encoder's timm block layout, `decoder_norm`, `decoder_pred`);
  `*_full.pth` = `{'model': sd}`, trained with `norm_pix_loss` (MAE README); training checkpoints add `args`.
- DINO, facebookresearch/dino `main_dino.py` (`MultiCropWrapper(backbone, head)`; checkpoint `student` (DDP
  `module.`), `teacher`, `dino_loss` with `center (1, K)`, `args`) and `vision_transformer.py` (`DINOHead`: `mlp` =
  Linear, [BatchNorm1d], GELU, ..., Linear to the bottleneck, a single `nn.Linear` when `nlayers == 1`; L2
  normalisation; `last_layer = weight_norm(Linear(bottleneck, K, bias=False))` with `weight_g (K, 1)` and
  `weight_v (K, bottleneck)`: `W = g * v / ||v||` row-wise, which is `WeightNormLinear`'s `gain * normalize(weight)`).
- SelfPatch, alinlab/SelfPatch `main_selfpatch.py` (`MultiCropWrapper(backbone, ca_head, c_head, p_head)`, checkpoints
  as DINO's; `dino_loss` with `center (1, 1, K)` and `patch_center (1, K_patch)`) and `selfpatch_vision_transformer.py`
  (`SelfPatchHead`).
- BYOL, vturrisi/solo-learn `solo/methods/byol.py` (`backbone`, `momentum_backbone`, `projector`,
  `momentum_projector`, `predictor`) and lightly-ai/lightly `benchmarks/imagenet/resnet50/byol.py` (`backbone`,
  `teacher_backbone`, `projection_head.layers`, `teacher_projection_head.layers`, `prediction_head.layers`).

The architecture comes from the shapes; the rest of the config from the checkpoint's `args` when it has them, else
from the method's defaults. `conversion.json` says which fields came from where.
"""

import json
import logging
import os
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedConfig, PreTrainedModel

from .encoder import check_output_dir, sha256_of, write_atomically
from .layouts import (
    FORMATS,
    RESNET,
    VIT,
    ConversionError,
    _is_sequential_resnet,
    _rename_sequential_resnet,
    find_encoder,
    load_checkpoint_file,
    preview,
    unwrap_state_dict,
)
from .resnet import read_torchvision_resnet, torchvision_resnet_to_hf
from .vit import _BLOCK_KEYS, block_weights, cls_free_vit_weights, read_timm_vit, timm_vit_config, vit_weights


logger = logging.getLogger(__name__)

# MAE's decoders: width 512, 16 heads for every released model (`models_mae.py` `mae_vit_*_dec512d8b`).
MAE_DECODER_HEADS = {512: 16}

FULL_FORMATS = ("mae", "dino", "selfpatch", "solo-learn", "lightly")


class _Record:
    """What a conversion inferred from shapes, read from the checkpoint's `args`, and left at the defaults."""

    def __init__(self) -> None:
        self.inferred: dict[str, object] = {}
        self.from_args: dict[str, object] = {}
        self.notes: list[str] = []


def convert_full_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    source_format: str,
    num_attention_heads: int | None = None,
    decoder_num_attention_heads: int | None = None,
) -> Path:
    """Converts a released training checkpoint into the ssl_hf pre-training model of its method (public API).

    Args:
        checkpoint: MAE `*_full.pth` (or a training checkpoint), DINO `*_full_checkpoint.pth` / `checkpoint.pth`,
            SelfPatch `checkpoint.pth`, or a solo-learn / lightly BYOL checkpoint.
        output_dir: Destination; must not exist or be empty (written under a temporary name, renamed at the end).
        source_format: One of `FULL_FORMATS`: `mae`, `dino`, `selfpatch`, `solo-learn`, `lightly`.
        num_attention_heads: Encoder heads (default: the standard heads of the width).
        decoder_num_attention_heads: MAE decoder heads (default: 16 for MAE's 512-wide decoders).

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: No checkpoint file.
        ConversionError: Unsupported format, output folder in use, not a full checkpoint, or tensors missing/unknown.
    """
    if source_format not in FULL_FORMATS:
        known = ", ".join(FORMATS)
        raise ConversionError(
            f"--full supports --from {', '.join(FULL_FORMATS)} for now; '{source_format}' "
            + (
                "is not implemented yet: convert its encoder without --full."
                if source_format in FORMATS
                else f"is not a format ({known})."
            )
        )
    source, out = Path(checkpoint), check_output_dir(output_dir)
    loaded = load_checkpoint_file(source)
    record = _Record()
    if source_format == "mae":
        model = _mae(loaded, source.name, num_attention_heads, decoder_num_attention_heads, record)
    elif source_format == "dino":
        model = _dino(loaded, source.name, num_attention_heads, record)
    elif source_format == "selfpatch":
        model = _selfpatch(loaded, source.name, num_attention_heads, record)
    else:
        model = _byol(loaded, source.name, source_format, record)
    fmt = FORMATS[source_format]
    conversion = {
        "format": fmt.name,
        "mode": "full",
        "method": model.config.model_type.removeprefix("ssl_"),
        "model_class": type(model).__name__,
        "source_file": source.name,
        "source_sha256": sha256_of(source),
        "source_repo": fmt.repo,
        "inferred_from_shapes": record.inferred,
        "from_checkpoint_args": record.from_args,
        "defaults": "every other config field is the method's default (see config.json)",
        "notes": record.notes,
    }

    def write(work: Path) -> None:
        model.save_pretrained(work)
        (work / "conversion.json").write_text(json.dumps(conversion, indent=2, default=str) + "\n")

    write_atomically(out, write)
    logger.info("Converted %s (%s, full) to %s in %s", source.name, fmt.name, type(model).__name__, out)
    return out


def _args(loaded: object) -> dict:
    """The training options saved with a checkpoint (`args`, an `argparse.Namespace` or dict), else empty."""
    args = loaded.get("args") if isinstance(loaded, dict) else None
    return dict(vars(args)) if hasattr(args, "__dict__") else dict(args) if isinstance(args, dict) else {}


def _take(args: dict, name: str, field: str, values: dict, record: _Record, convert=lambda v: v) -> None:
    if args.get(name) is not None:
        values[field] = convert(args[name])
        record.from_args[field] = f"args.{name} = {args[name]}"


def _check_all_used(state: dict[str, Tensor], used: set[str], what: str) -> None:
    unused = sorted(set(state) - used)
    if unused:
        raise ConversionError(
            f"{what} has tensors this conversion does not know: {preview(unused)}. They would be lost, so the "
            "conversion stops."
        )


def _load(model: PreTrainedModel, weights: dict[str, Tensor]) -> PreTrainedModel:
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, strict=True)
    except RuntimeError as err:
        raise ConversionError(f"The converted weights do not fit {type(model).__name__}: {err}") from err
    return model.eval()


def _mae(
    loaded: object, source: str, heads: int | None, decoder_heads: int | None, record: _Record
) -> PreTrainedModel:
    """`MAEForPreTraining` from MAE's `MaskedAutoencoderViT` state dict (encoder + decoder)."""
    from ..models.mae import MAEConfig, MAEForPreTraining

    state, _ = unwrap_state_dict(loaded, source=source)
    if "decoder_embed.weight" not in state:
        raise ConversionError(
            f"{source} has no MAE decoder (`decoder_embed`, `decoder_blocks`, ...): it is an encoder-only file such as "
            "mae_pretrain_vit_*.pth. --full needs a *_full.pth release or a training checkpoint; drop --full to "
            "export the encoder."
        )
    vit = read_timm_vit(state, "")
    if vit.cls_token is None:
        raise ConversionError(f"{source}: MAE's encoder has a cls token (`cls_token`), this file has none.")
    encoder, vit_config = vit_weights(vit, state, heads)
    weights = {f"backbone.{k}": v for k, v in encoder.items()}
    used = set(vit.consumed)
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("decoder_blocks.")), default=-1)
    block_keys = (*_BLOCK_KEYS, *(("attn.qkv.bias",) * vit.qkv_bias))
    required = [
        *(f"decoder_{n}.{leaf}" for n in ("embed", "norm", "pred") for leaf in ("weight", "bias")),
        "mask_token",
        "decoder_pos_embed",
        *(f"decoder_blocks.{i}.{k}" for i in range(depth) for k in block_keys),
    ]
    missing = [k for k in required if k not in state]
    if depth < 1 or missing:
        raise ConversionError(f"{source}: MAE's decoder is incomplete: missing {preview(missing) or 'every block'}.")
    used.update(required)
    width = state["decoder_embed.weight"].shape[0]
    dec_heads = decoder_heads or MAE_DECODER_HEADS.get(width)
    if dec_heads is None or width % dec_heads:
        raise ConversionError(
            f"The decoder is {width} wide: its attention heads are not stored and are not MAE's (512 -> 16); pass "
            "--decoder_num_attention_heads (decoder_num_attention_heads=) with the value of the source model."
        )
    grid_rows = vit.grid * vit.grid + 1
    if tuple(state["decoder_pos_embed"].shape) != (1, grid_rows, width):
        raise ConversionError(
            f"`decoder_pos_embed` is {tuple(state['decoder_pos_embed'].shape)}, expected (1, {grid_rows}, {width})."
        )
    if "decoder_blocks.0.attn.qkv.bias" in state and not vit.qkv_bias:
        raise ConversionError("The decoder's qkv has a bias but the encoder's has none: ssl_hf's decoder follows it.")
    _check_all_used(state, used, source)
    dec = "decoder."
    for name in ("decoder_embed.weight", "decoder_embed.bias", "decoder_norm.weight", "decoder_norm.bias"):
        weights[dec + name] = state[name]
    weights[dec + "decoder_pred.weight"], weights[dec + "decoder_pred.bias"] = (
        state["decoder_pred.weight"],
        state["decoder_pred.bias"],
    )
    weights[dec + "mask_token"] = state["mask_token"].reshape(1, 1, width)
    weights[dec + "decoder_pos_embed"] = state["decoder_pos_embed"]
    for i in range(depth):
        weights.update(block_weights(state, f"decoder_blocks.{i}.", f"{dec}decoder_layers.{i}.", vit.qkv_bias))
    values = {
        "decoder_hidden_size": width,
        "decoder_num_hidden_layers": depth,
        "decoder_num_attention_heads": dec_heads,
        "decoder_intermediate_size": state["decoder_blocks.0.mlp.fc1.weight"].shape[0],
    }
    record.inferred.update(_vit_record(vit_config), **values)
    record.inferred["decoder_num_attention_heads"] = (
        f"{dec_heads} ({'given' if decoder_heads else 'MAE decoder table: 512 -> 16'})"
    )
    values["norm_pix_loss"] = True  # MAE README: the *_full.pth releases were trained with normalised pixels
    args = _args(loaded)
    _take(args, "norm_pix_loss", "norm_pix_loss", values, record, bool)
    _take(args, "mask_ratio", "mask_ratio", values, record, float)
    if "norm_pix_loss" not in record.from_args:
        record.notes.append("norm_pix_loss = True: MAE's *_full.pth releases were trained with normalised pixels.")
    model = MAEForPreTraining(MAEConfig(backbone_config=vit_config, **values))
    return _load(model, weights)


def _vit_record(config: PreTrainedConfig) -> dict[str, object]:
    return {
        "backbone": {
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "intermediate_size": config.intermediate_size,
            "patch_size": config.patch_size,
            "image_size": config.image_size,
            "qkv_bias": config.qkv_bias,
            "num_attention_heads": config.num_attention_heads,
        }
    }


def _two_networks(loaded: object, source: str, title: str, read_network) -> tuple[dict, dict, object]:
    """Student and teacher of a DINO-style full checkpoint, each read by `read_network(state, where)`.

    `read_network` returns `({our prefix: weights}, architecture signature, used keys)`; student and teacher must have
    the same signature, and every tensor of both must be used.
    """
    if not (isinstance(loaded, dict) and isinstance(loaded.get("student"), dict) and "teacher" in loaded):
        raise ConversionError(
            f"{source} is not a full {title} checkpoint (entries 'student', 'teacher', 'dino_loss', as "
            "*_full_checkpoint.pth / checkpoint.pth): a backbone-only release cannot continue pre-training. Drop "
            "--full to export the encoder."
        )
    networks = []
    for name in ("student", "teacher"):
        state, _ = unwrap_state_dict(loaded, name, source)
        parts, signature, used = read_network(state, f"{source} '{name}'")
        _check_all_used(state, used, f"{source} '{name}'")
        networks.append((parts, signature))
    (student, signature), (teacher, teacher_signature) = networks
    if signature != teacher_signature:
        raise ConversionError(f"{source}: the student and the teacher have different architectures.")
    return student, teacher, signature


def _distillation_fields(loaded: object, values: dict, record: _Record, student_gain: Tensor) -> None:
    """DINO-style config fields from the checkpoint's `args` (`main_dino.py` / `main_selfpatch.py` option names)."""
    args = _args(loaded)
    _take(args, "norm_last_layer", "norm_last_layer", values, record, bool)
    if "norm_last_layer" not in record.from_args:
        values["norm_last_layer"] = bool(torch.all(student_gain == 1))
        record.inferred["norm_last_layer"] = f"{values['norm_last_layer']} (student weight_g all 1: frozen gain)"
    _take(args, "momentum_teacher", "ema_base", values, record, float)
    _take(args, "teacher_temp", "teacher_temp", values, record, float)
    _take(args, "warmup_teacher_temp", "warmup_teacher_temp", values, record, float)
    _take(args, "local_crops_number", "num_local_crops", values, record, int)
    _take(args, "global_crops_scale", "global_crop_min_scale", values, record, lambda v: float(v[0]))
    _take(args, "local_crops_scale", "local_crop_min_scale", values, record, lambda v: float(v[0]))
    _take(args, "k_num", "num_neighbors_k", values, record, int)  # SelfPatch only
    epochs = args.get("epochs")
    if epochs:
        _take(args, "warmup_teacher_temp_epochs", "teacher_temp_warmup_fraction", values, record, lambda v: v / epochs)
        _take(args, "freeze_last_layer", "freeze_last_layer_fraction", values, record, lambda v: v / epochs)
    record.notes.append(
        "student (`module.` removed), teacher, heads and centres are converted; the optimiser state, epoch and fp16 "
        "scaler are dropped (a run started with --init_from restarts its optimiser and schedules at step 0)."
    )


def _centre(loaded: object, name: str, dim: int, source: str, record: _Record) -> Tensor:
    """`dino_loss.<name>` as a `(dim,)` buffer (zeros, with a note, when the checkpoint has none)."""
    losses = loaded.get("dino_loss") if isinstance(loaded, dict) else None
    center = losses.get(name) if isinstance(losses, dict) else None
    if center is None:
        record.notes.append(f"the checkpoint has no `dino_loss.{name}`: it starts at zero.")
        return torch.zeros(dim)
    if center.numel() != dim:
        raise ConversionError(f"{source}: `dino_loss.{name}` has {center.numel()} values, the head {dim} outputs.")
    return center.reshape(dim)


def _local_crop_size(config: PreTrainedConfig, values: dict, record: _Record) -> None:
    # DINO's local crops are 96 px for 224-px global crops: the same fraction, in whole patches
    patch = config.patch_size
    values["local_crop_size"] = max(patch, round(config.image_size * 96 / 224 / patch) * patch)
    record.notes.append(f"local_crop_size = {values['local_crop_size']}: 96/224 of the global crop, in whole patches.")


def _dino(loaded: object, source: str, heads: int | None, record: _Record) -> PreTrainedModel:
    """`DINOForPreTraining` from `main_dino.py`'s full checkpoint: student, teacher, both heads and the centre."""
    from ..models.dino import DINOConfig, DINOForPreTraining

    def read(state: dict[str, Tensor], where: str) -> tuple[dict, object, set[str]]:
        backbone, config, used = _dino_backbone(state, where, heads)
        head, fields, head_used = _dino_head(state, where, "head.")
        return {"backbone": backbone, "head": head, "config": config}, (config.to_dict(), fields), used | head_used

    student, teacher, (_, fields) = _two_networks(loaded, source, "DINO", read)
    config = student["config"]
    values = dict(fields)
    if config.model_type == "vit":
        record.inferred.update(_vit_record(config))
        _local_crop_size(config, values, record)
    else:
        values["image_size"] = 224
        record.inferred["backbone"] = {"model_type": "resnet", "hidden_sizes": config.hidden_sizes}
        record.notes.append("image_size = 224: a ResNet does not store its input size (DINO's global crops).")
    record.inferred.update(fields)
    _distillation_fields(loaded, values, record, student["head"]["last_layer.gain"])
    values.pop("num_neighbors_k", None)
    model = DINOForPreTraining(DINOConfig(backbone_config=config, **values))
    weights = {"center": _centre(loaded, "center", fields["out_dim"], source, record), "progress": torch.zeros(())}
    for network, prefix in ((student, ""), (teacher, "teacher_")):
        for part in ("backbone", "head"):
            weights.update({f"{prefix}{part}.{k}": v for k, v in network[part].items()})
    return _load(model, weights)


def _selfpatch(loaded: object, source: str, heads: int | None, record: _Record) -> PreTrainedModel:
    """`SelfPatchForPreTraining` from `main_selfpatch.py`'s checkpoint: backbone, `ca_head`, `c_head`, `p_head`, centres.

    alinlab/SelfPatch `selfpatch_vision_transformer.py`: the backbone has no cls token and no final norm;
    `SelfPatchHead` (`ca_head`) = `cls_token`, two class-attention blocks (`norm1`, `attn.q/k/v/proj` with biases,
    `norm2`, `mlp.fc1/fc2`, LayerNorm eps 1e-6) and `norm`, the LayerNorm of every output token, which is ssl_hf's
    backbone `post_layernorm`. `dino_loss` holds `center (1, 1, K)` and `patch_center (1, K_patch)`.
    """
    from ..models.selfpatch import SelfPatchConfig, SelfPatchForPreTraining

    def read(state: dict[str, Tensor], where: str) -> tuple[dict, object, set[str]]:
        norm = (state.get("ca_head.norm.weight"), state.get("ca_head.norm.bias"))
        if norm[0] is None or norm[1] is None:
            raise ConversionError(f"{where}: no SelfPatch aggregation head (`ca_head.norm`, `ca_head.cls_blocks`).")
        vit = read_timm_vit(state, "backbone.")
        if vit.cls_token is not None:
            raise ConversionError(
                f"{where}: SelfPatch's backbone has no cls token, this one has `backbone.cls_token`."
            )
        backbone, _ = cls_free_vit_weights(vit, state, heads, None, norm)
        aggregation, blocks, ca_used = _ca_head(state, where)
        head, fields, head_used = _dino_head(state, where, "c_head.")
        patch_head, patch_fields, patch_used = _dino_head(state, where, "p_head.")
        if {k: v for k, v in patch_fields.items() if k != "out_dim"} != {
            k: v for k, v in fields.items() if k != "out_dim"
        }:
            raise ConversionError(f"{where}: `c_head` and `p_head` differ beyond their outputs (ssl_hf shares them).")
        fields = {**fields, "patch_out_dim": patch_fields["out_dim"], "num_aggregation_blocks": blocks}
        config = timm_vit_config(vit, heads)
        used = vit.consumed | ca_used | head_used | patch_used | {"ca_head.norm.weight", "ca_head.norm.bias"}
        parts = {"backbone": backbone, "aggregation": aggregation, "head": head, "patch_head": patch_head}
        return {**parts, "config": config}, (config.to_dict(), fields), used

    student, teacher, (_, fields) = _two_networks(loaded, source, "SelfPatch", read)
    config = student["config"]
    values = dict(fields)
    record.inferred.update(_vit_record(config), **fields)
    _local_crop_size(config, values, record)
    _distillation_fields(loaded, values, record, student["head"]["last_layer.gain"])
    model = SelfPatchForPreTraining(SelfPatchConfig(backbone_config=config, **values))
    weights = {
        "center": _centre(loaded, "center", fields["out_dim"], source, record),
        "patch_center": _centre(loaded, "patch_center", fields["patch_out_dim"], source, record),
        "progress": torch.zeros(()),
    }
    for network, prefix in ((student, ""), (teacher, "teacher_")):
        for part in ("backbone", "aggregation", "head", "patch_head"):
            weights.update({f"{prefix}{part}.{k}": v for k, v in network[part].items()})
    return _load(model, weights)


def _ca_head(state: dict[str, Tensor], where: str) -> tuple[dict[str, Tensor], int, set[str]]:
    """SelfPatch's `ca_head` query token and class-attention blocks -> `SelfPatchAggregation` weights."""
    p = "ca_head."
    blocks = 1 + max((int(k.split(".")[2]) for k in state if k.startswith(f"{p}cls_blocks.")), default=-1)
    names = {
        "norm1": "norm1",
        "attn.q": "q",
        "attn.k": "k",
        "attn.v": "v",
        "attn.proj": "proj",
        "norm2": "norm2",
        "mlp.fc1": "mlp.0",
        "mlp.fc2": "mlp.2",
    }
    required = [f"{p}cls_token"] + [
        f"{p}cls_blocks.{i}.{theirs}.{leaf}" for i in range(blocks) for theirs in names for leaf in ("weight", "bias")
    ]
    missing = [k for k in required if k not in state]
    if blocks < 1 or missing:
        raise ConversionError(
            f"{where}: SelfPatch's `ca_head` is incomplete: missing {preview(missing) or 'every block'}."
        )
    weights = {"cls_token": state[f"{p}cls_token"]}
    for i in range(blocks):
        for theirs, ours in names.items():
            for leaf in ("weight", "bias"):
                weights[f"blocks.{i}.{ours}.{leaf}"] = state[f"{p}cls_blocks.{i}.{theirs}.{leaf}"]
    return weights, blocks, set(required)


def _dino_backbone(
    state: dict[str, Tensor], where: str, heads: int | None
) -> tuple[dict[str, Tensor], PreTrainedConfig, set[str]]:
    layout = find_encoder(state, FORMATS["dino"])
    if layout is None or layout.prefix != "backbone.":
        raise ConversionError(f"{where}: no DINO backbone (timm-style ViT or torchvision ResNet) under `backbone.`.")
    if layout.architecture == RESNET:
        used = read_torchvision_resnet(state, "backbone.").consumed
        weights, config = torchvision_resnet_to_hf(state, "backbone.")
        return weights, config, set(used) | {k for k in state if k.startswith("backbone.fc.")}
    assert layout.architecture == VIT
    vit = read_timm_vit(state, "backbone.")
    weights, config = vit_weights(vit, state, heads)
    return weights, config, set(vit.consumed) | {k for k in state if k.startswith("backbone.head.")}


def _dino_head(state: dict[str, Tensor], where: str, p: str) -> tuple[dict[str, Tensor], dict[str, object], set[str]]:
    """DINO's head under `p` (`head.`; SelfPatch's `c_head.`, `p_head.`) -> `DINOHead` weights and config fields.

    The `mlp` indices are those of `DINOHead` (both shift the same way with BatchNorm).
    """
    head = {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}
    if "mlp.weight" in head:  # nlayers == 1: `mlp` is a single Linear
        head = {(f"mlp.0.{k[4:]}" if k.startswith("mlp.") else k): v for k, v in head.items()}
    gain = head.pop("last_layer.weight_g", head.pop("last_layer.parametrizations.weight.original0", None))
    direction = head.pop("last_layer.weight_v", head.pop("last_layer.parametrizations.weight.original1", None))
    if gain is None or direction is None:
        raise ConversionError(
            f"{where}: no weight-normalised last layer (`{p}last_layer.weight_g` / `weight_v`, or the "
            "`parametrizations.weight.original0/1` of torch's newer weight norm)."
        )
    linears = sorted(
        int(k.split(".")[1]) for k, v in head.items() if k.startswith("mlp.") and k.endswith(".weight") and v.ndim == 2
    )
    if not linears:
        raise ConversionError(f"{where}: no DINO head `{p}mlp` layers.")
    use_bn = any(k.endswith("running_mean") for k in head)
    fields = {
        "out_dim": direction.shape[0],
        "head_bottleneck_dim": direction.shape[1],
        "head_num_layers": len(linears),
        "use_bn_in_head": use_bn,
    }
    if len(linears) > 1:
        fields["head_hidden_dim"] = head[f"mlp.{linears[0]}.weight"].shape[0]
    if head[f"mlp.{linears[-1]}.weight"].shape[0] != direction.shape[1]:
        raise ConversionError(f"{where}: the head's last MLP layer does not feed the last layer (bottleneck width).")
    head["last_layer.weight"], head["last_layer.gain"] = direction, gain.reshape(-1, 1)
    return head, fields, {k for k in state if k.startswith(p)}


# BYOL networks: (online backbone, target backbones tried in order, projector, target projectors, predictor, dropped)
_BYOL_LAYOUTS = {
    # vturrisi/solo-learn `solo/methods/byol.py` + `base.py`: nn.Sequential heads (Linear, BatchNorm1d, ReLU, Linear)
    "solo-learn": (
        "backbone.",
        ("momentum_backbone.",),
        "projector.",
        ("momentum_projector.",),
        "predictor.",
        ("classifier.",),
    ),
    # lightly-ai/lightly `benchmarks/imagenet/resnet50/byol.py` (teacher_*) and `examples/pytorch_lightning/byol.py`
    # (*_momentum): `BYOLProjectionHead` / `BYOLPredictionHead` keep their Sequential in `layers`
    "lightly": (
        "backbone.",
        ("teacher_backbone.", "backbone_momentum."),
        "projection_head.layers.",
        ("teacher_projection_head.layers.", "projection_head_momentum.layers."),
        "prediction_head.layers.",
        ("online_classifier.",),
    ),
}


def _byol(loaded: object, source: str, source_format: str, record: _Record) -> PreTrainedModel:
    """`BYOLForPreTraining` (ResNet) from a solo-learn or lightly BYOL checkpoint: online and target networks, heads.

    Both projects' heads are `Linear -> BatchNorm1d -> ReLU -> Linear` at indices 0, 1, 3, as ssl_hf's `MLPHead`.
    Without a target network (e.g. a file saved from the online network only) the target starts as a copy of the
    online network, as BYOL's does at step 0.
    """
    from ..models.byol import BYOLConfig, BYOLForPreTraining

    state, _ = unwrap_state_dict(loaded, source=source)
    online, targets, projector, target_projectors, predictor, dropped = _BYOL_LAYOUTS[source_format]
    for prefix in (online, *targets):
        if _is_sequential_resnet(state, prefix):
            _rename_sequential_resnet(state, prefix)
    if f"{online}conv1.weight" not in state:
        raise ConversionError(f"{source}: no torchvision ResNet under `{online}` (the online encoder of BYOL).")
    if f"{projector}0.weight" not in state or f"{predictor}0.weight" not in state:
        raise ConversionError(
            f"{source}: no BYOL projector (`{projector}*`) and predictor (`{predictor}*`): --full needs the heads. "
            "Convert the encoder without --full instead."
        )
    target = next((p for p in targets if f"{p}conv1.weight" in state), None)
    target_projector = next((p for p in target_projectors if f"{p}0.weight" in state), None)
    if (target is None) != (target_projector is None):
        raise ConversionError(f"{source}: the target network is incomplete (backbone and projector go together).")
    if target is None:
        target, target_projector = online, projector
        record.notes.append(
            "the file has no target network: it starts as a copy of the online network (BYOL's step 0)."
        )
    used = {k for k in state if k.startswith(dropped)}
    weights: dict[str, Tensor] = {}
    configs = []
    for ours, theirs in (("backbone.", online), ("target_backbone.", target)):
        resnet = read_torchvision_resnet(state, theirs)
        converted, config = torchvision_resnet_to_hf(state, theirs)
        weights.update({ours + k: v for k, v in converted.items()})
        configs.append(config.to_dict())
        used |= set(resnet.consumed) | {k for k in state if k.startswith(f"{theirs}fc.")}
    if configs[0] != configs[1]:
        raise ConversionError(f"{source}: the online and target encoders have different architectures.")
    heads = {}
    for ours, theirs in (
        ("projector.", projector),
        ("target_projector.", target_projector),
        ("predictor.", predictor),
    ):
        head, norm = _mlp_head(state, theirs, source)
        heads[ours] = (head["0.weight"].shape[0], head["3.weight"].shape[0], norm)
        weights.update({ours + k: v for k, v in head.items()})
        used |= {theirs + k for k in head}
    _check_all_used(state, used, source)
    (proj_hidden, proj_out, norm), (_, _, target_norm), (pred_hidden, pred_out, pred_norm) = heads.values()
    if heads["projector."] != heads["target_projector."] or pred_out != proj_out or pred_norm != norm:
        raise ConversionError(f"{source}: the BYOL heads do not have matching shapes.")
    values = {
        "proj_hidden_dim": proj_hidden,
        "proj_out_dim": proj_out,
        "pred_hidden_dim": pred_hidden,
        "head_norm": norm,
    }
    _, config = torchvision_resnet_to_hf(state, online)
    record.inferred.update({"backbone": {"model_type": "resnet", "hidden_sizes": config.hidden_sizes}}, **values)
    record.notes.append(
        "image_size = 224 (a ResNet does not store its input size) and ema_base = 0.996 (BYOL's): the Lightning "
        "hyper-parameters are not read. The optimiser state and any online classifier are dropped."
    )
    model = BYOLForPreTraining(BYOLConfig(backbone_config=config, image_size=224, **values))
    return _load(model, weights)


def _mlp_head(state: dict[str, Tensor], p: str, source: str) -> tuple[dict[str, Tensor], str]:
    """`Linear (0) -> [BatchNorm1d (1)] -> ReLU -> Linear (3)` under `p` -> `MLPHead` weights and its norm."""
    names = [f"{i}.{leaf}" for i in (0, 3) for leaf in ("weight", "bias")]
    missing = [p + n for n in names if p + n not in state]
    if missing:
        raise ConversionError(f"{source}: the head `{p}` is not Linear-BN-ReLU-Linear: missing {preview(missing)}.")
    head = {n: state[p + n] for n in names}
    norm = "bn" if f"{p}1.running_mean" in state else "none"
    if norm == "bn":
        for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if f"{p}1.{leaf}" in state:
                head[f"1.{leaf}"] = state[f"{p}1.{leaf}"]
    return head, norm
