"""`ssl-hf convert` (default path): a released checkpoint -> the same export `ssl-hf export` writes.

The output folder holds `config.json` + `model.safetensors` of a stock transformers model (`ViTModel` with a fixed
identity pooler, `SiglipVisionModel` for a ViT without cls token, `ResNetModel`), `preprocessor_config.json`, a model
card naming the source file and paper, and `conversion.json` (the source, its checksum and what the conversion did).
It is written to a temporary sibling folder and renamed at the end: a failed conversion leaves nothing behind.
"""

import copy
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from torch import Tensor
from transformers import PreTrainedModel, ViTConfig, ViTModel

from ..cards import render_card
from ..export import vit_with_identity_pooler, write_processor
from .layouts import (
    CLS_FREE_VIT,
    FORMATS,
    RESNET,
    VIT,
    ConversionError,
    EncoderLayout,
    SourceFormat,
    describe_layout_error,
    dropped_parts,
    find_encoder,
    load_checkpoint_file,
    preview,
    unmatched_keys,
    unwrap_state_dict,
)
from .resnet import TorchvisionResNet, build_resnet, read_torchvision_resnet, torchvision_resnet_to_hf
from .vit import TimmViT, build_encoder, cls_free_vit_weights, read_timm_vit, timm_vit_config, vit_weights


logger = logging.getLogger(__name__)

# SelfPatch's final LayerNorm is the aggregation head's: `SelfPatchHead.norm` normalises every output token
SELFPATCH_NORM = "ca_head.norm."


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    source_format: str,
    num_attention_heads: int | None = None,
    image_size: int | None = None,
    repo_id: str | None = None,
) -> Path:
    """Converts a released checkpoint into a stock transformers export (public API).

    Args:
        checkpoint: The `.pth` / `.ckpt` file of the source project.
        output_dir: Destination folder; must not exist or be empty (it is created at the very end).
        source_format: One of `FORMATS` (`mae`, `dino`, `ibot`, `tec`, `selfpatch`, `timm-vit`, `torchvision-resnet`,
            `solo-learn`, `lightly`).
        num_attention_heads: ViT heads (default: the standard heads of the width).
        image_size: Input side (default: ViT position grid x patch; 224 for ResNets). A ViT size that differs from its
            grid resizes the position table.
        repo_id: Hub id shown in the card's snippets (default: the folder name).

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: No checkpoint file.
        ConversionError: Unknown format, output folder in use, unreadable file, or no encoder of the format in it.
    """
    fmt = _format(source_format)
    source, out = Path(checkpoint), check_output_dir(output_dir)
    state, container = unwrap_state_dict(load_checkpoint_file(source), source=source.name)
    layout = find_encoder(state, fmt)
    if layout is None:
        raise describe_layout_error(state, fmt, source.name, container)
    model, notes = _convert(state, layout, num_attention_heads, image_size)
    exported = vit_with_identity_pooler(model) if isinstance(model, ViTModel) else _as_exported(model)
    size = image_size or (224 if layout.architecture == RESNET else model.config.image_size)
    record = _record(fmt, source, container, layout, dropped_parts(state, layout), notes)

    def write(work: Path) -> None:
        exported.save_pretrained(work)
        write_processor(work, size)
        (work / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
        method = fmt.card_method or fmt.name
        render_card(exported, method, None, None, repo_id or out.name, size, conversion=record).save(
            work / "README.md"
        )

    write_atomically(out, write)
    logger.info("Converted %s (%s, %s) to %s", source.name, fmt.name, type(exported).__name__, out)
    return out


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """The absolute output folder, refused before any work when it exists and is not empty."""
    out = Path(output_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"--output_dir {out} exists and is not empty: give a new folder (or remove it first).")
    return out


def write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Runs `write(folder)` on a hidden temporary sibling of `out`, then renames it to `out`; removes it on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.converting"  # hidden sibling: renamed at the end
    work.mkdir()
    try:
        write(work)
        os.rename(work, out)  # atomic; replaces an empty --output_dir
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _format(name: str) -> SourceFormat:
    if name not in FORMATS:
        raise ConversionError(f"Unknown format '{name}' (--from): choose one of {', '.join(FORMATS)}.")
    return FORMATS[name]


def _convert(
    state: dict[str, Tensor], layout: EncoderLayout, num_attention_heads: int | None, image_size: int | None
) -> tuple[PreTrainedModel, list[str]]:
    """The transformers model of the encoder found at `layout`, and the notes of what the conversion did."""
    prefix = layout.prefix
    source = read_torchvision_resnet(state, prefix) if layout.architecture == RESNET else read_timm_vit(state, prefix)
    unmatched = unmatched_keys(state, layout, source.consumed)
    if unmatched:
        shown = preview(unmatched)
        raise ConversionError(
            f"The encoder at '{prefix}' has keys this conversion does not know: {shown}. They would be lost, so the "
            "conversion stops (layer scale, fc_norm pooling, relative positions and other timm variants are not "
            "supported)."
        )
    notes = source.notes
    if isinstance(source, TorchvisionResNet):
        return build_resnet(*torchvision_resnet_to_hf(state, prefix)), notes
    has_norm = f"{prefix}norm.weight" in state
    if layout.architecture == VIT:
        if not has_norm:
            notes.append(_NO_FINAL_NORM)
        return build_encoder(*vit_weights(source, state, num_attention_heads, image_size)), notes
    final_norm = None
    if not has_norm and f"{SELFPATCH_NORM}weight" in state:
        final_norm = (state[f"{SELFPATCH_NORM}weight"], state[f"{SELFPATCH_NORM}bias"])
        notes.append(
            "the final LayerNorm is SelfPatch's `ca_head.norm` (the norm its aggregation head applies to every output "
            "token), as in ssl_hf's own SelfPatch export."
        )
    elif not has_norm:
        notes.append(_NO_FINAL_NORM)
    return build_encoder(*cls_free_vit_weights(source, state, num_attention_heads, image_size, final_norm)), notes


_NO_FINAL_NORM = (
    "the source has no final LayerNorm (`norm`): the export's final LayerNorm has weight 1 and bias 0, so "
    "`last_hidden_state` is each token standardised without a learnt scale and shift (what the freshly built norm of "
    "the source's fine-tuning code computes); the raw last-block tokens are `hidden_states[-1]` "
    "(`output_hidden_states=True`)."
)


def _as_exported(model: PreTrainedModel) -> PreTrainedModel:
    exported = copy.deepcopy(model).eval()
    exported.config.architectures = [type(model).__name__]
    return exported


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record(
    fmt: SourceFormat, source: Path, container: str, layout: EncoderLayout, dropped: dict[str, int], notes: list[str]
) -> dict:
    """`conversion.json`: the source, what was taken and dropped, and the card text of a converted export."""
    sha256 = sha256_of(source)
    entry = "the file" if container == "the top level" else f"the entry {container}"
    where = f"the top level of {entry}" if not layout.prefix else f"`{layout.prefix}*` of {entry}"
    dropped_text = ", ".join(f"`{name}` ({n} tensors)" for name, n in sorted(dropped.items())) or "nothing"
    how = (
        "(BatchNorm running statistics included) are converted, not re-trained: tensors are renamed only."
        if layout.architecture == RESNET
        else "are converted, not re-trained: q, k and v are the row blocks of the fused `qkv`, other tensors are "
        "renamed."
    )
    source_note = (
        f"`{source.name}` (sha256 `{sha256}`), a checkpoint of [{fmt.repo}](https://github.com/{fmt.repo}) read as "
        f"`--from {fmt.name}`: {_ARCH[layout.architecture]} at {where}; dropped: {dropped_text}. The weights {how}"
    )
    if notes:
        source_note += " Notes: " + " ".join(f"{note[0].upper()}{note[1:]}" for note in notes)
    card = {
        "paper_short": fmt.paper,
        "paper_url": fmt.paper_url,
        "bibtex": fmt.bibtex,
        "license": fmt.license,
        "tags": ["converted-checkpoint", fmt.name],
        "source_note": source_note,
        "export_note": f"the encoder of the released {fmt.title} checkpoint ({_ARCH[layout.architecture]}).",
        "training_note": (
            f"Pre-trained outside ssl_hf, with the code of [{fmt.repo}](https://github.com/{fmt.repo}); see "
            f"[{fmt.paper}]({fmt.paper_url}) for the method, the data and the recipe. ssl_hf only converted the "
            "released weights: no training arguments are recorded here."
        ),
        "intended_use": (
            "What the source's authors intend: feature extraction, probing and fine-tuning at the resolution the "
            "model was trained on. The processor resizes to the model's input size and normalises with the ImageNet "
            "mean and standard deviation, as the source's evaluation code does."
        ),
        "limitations": (
            "Converted weights. ssl_hf checks its conversion against an independent re-implementation of the source's "
            "forward on small random models (equal to 1e-5); this checkpoint itself was not evaluated by ssl_hf, and "
            "results of the paper are not re-measured. The weights keep the license of their source "
            f"([{fmt.repo}](https://github.com/{fmt.repo})). The exported model has no drop-path for fine-tuning."
        ),
    }
    if fmt.card_method is None:
        card["method_title"] = fmt.title
        card["method_summary"] = fmt.summary
    return {
        "format": fmt.name,
        "method": fmt.card_method or fmt.name,
        "source_file": source.name,
        "source_sha256": sha256,
        "source_repo": fmt.repo,
        "container": container,
        "encoder_prefix": layout.prefix,
        "architecture": layout.architecture,
        "dropped": dropped,
        "notes": notes,
        "card": card,
    }


_ARCH = {VIT: "a ViT with cls token", CLS_FREE_VIT: "a ViT without cls token", RESNET: "a ResNet"}


def load_vit_encoder(checkpoint: str | os.PathLike, num_attention_heads: int | None = None) -> ViTModel:
    """The timm-style ViT (with cls token) of an official checkpoint as a `ViTModel`, converted in memory.

    Used by TEC's `--base_model x.pth`: any container (`{'model': sd}`, raw, `{'state_dict': sd}`, full DINO-style),
    encoder at the top level or under `backbone.`, as `--from mae|dino|ibot|tec|timm-vit` read them.

    Args:
        checkpoint: The `.pth` file.
        num_attention_heads: Heads, for a width outside `HEADS_BY_WIDTH`.

    Raises:
        ConversionError: No such ViT in the file (or a width without standard heads and no `num_attention_heads`).
    """
    state, vit = _read_vit_file(checkpoint)
    return build_encoder(*vit_weights(vit, state, num_attention_heads))


def read_vit_config(checkpoint: str | os.PathLike, num_attention_heads: int | None = None) -> ViTConfig:
    """The `ViTConfig` that `load_vit_encoder` builds (reads the file, converts no weights)."""
    return timm_vit_config(_read_vit_file(checkpoint)[1], num_attention_heads)


def _read_vit_file(checkpoint: str | os.PathLike) -> tuple[dict[str, Tensor], TimmViT]:
    path = Path(checkpoint)
    fmt = FORMATS["timm-vit"]
    state, container = unwrap_state_dict(load_checkpoint_file(path), source=path.name)
    layout = find_encoder(state, fmt)
    if layout is None:
        raise describe_layout_error(state, fmt, path.name, container)
    return state, read_timm_vit(state, layout.prefix)
