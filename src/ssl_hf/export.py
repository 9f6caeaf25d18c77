"""Export: the encoder of a pre-training checkpoint as a stock transformers model + processor + model card (D1, D8)."""

import copy
import json
import logging
import os
from pathlib import Path
from typing import Literal

import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from transformers import (
    AutoModelForPreTraining,
    Dinov2Config,
    Dinov2Model,
    PreTrainedModel,
    ResNetConfig,
    ResNetModel,
    SiglipVisionModel,
    ViTModel,
)
from transformers import ViTImageProcessorPil as ViTImageProcessor

from .data.views import IMAGENET_MEAN, IMAGENET_STD


logger = logging.getLogger(__name__)

CARDS_DIR = Path(__file__).parent / "model_cards"
ExportFormat = Literal["vit", "dinov2"]


def export_pretrained(
    pretrained: str | os.PathLike | PreTrainedModel,
    output_dir: str | os.PathLike,
    export_format: ExportFormat = "vit",
    results: dict | None = None,
    repo_id: str | None = None,
    keep_adapters: bool = False,
) -> Path:
    """Writes the method's encoder as a plain transformers checkpoint that `AutoModel.from_pretrained` loads.

    Args:
        pretrained: A `<M>ForPreTraining` or the folder of its `save_pretrained` (e.g. `RUN/final`).
        output_dir: Destination folder (created).
        export_format: `vit` (`ViTModel`) or `dinov2` (`Dinov2Model`; also loads with `Dinov2Backbone`).
        results: Evaluation results (`ssl-hf evaluate` JSON) to put in the model card.
        repo_id: Hub id shown in the card's snippets (defaults to the folder name).
        keep_adapters: Keep the pre-training adapters (TEC) for parameter-efficient fine-tuning: saves the method's
            own encoder model (e.g. `TECModel`), which loads with `AutoModel` after `import ssl_hf`.

    Returns:
        The output folder, holding `config.json`, `model.safetensors`, `preprocessor_config.json` and `README.md`.
    """
    source_dir = None
    if not isinstance(pretrained, PreTrainedModel):
        source_dir = Path(pretrained)
        if not (source_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{source_dir} has no config.json: give the `final/` folder of a run (or any save_pretrained folder)."
            )
        import ssl_hf  # noqa: F401  registers the Auto classes

        pretrained = AutoModelForPreTraining.from_pretrained(source_dir)
    encoder = pretrained.get_export_backbone()
    if keep_adapters:
        if not hasattr(pretrained, "get_adapter_model"):
            raise ValueError(f"--keep_adapters: {type(pretrained).__name__} has no adapters (TEC has).")
        if export_format != "vit":
            raise ValueError("--keep_adapters saves ssl_hf's own format; it cannot be combined with --format dinov2.")
        exported = pretrained.get_adapter_model()
    elif isinstance(encoder, ResNetModel):
        if export_format != "vit":
            raise ValueError(
                f"--format {export_format} is for ViT encoders; a ResNet exports as itself (omit --format)."
            )
        exported = copy.deepcopy(encoder).eval()
        exported.config.architectures = [type(encoder).__name__]
    elif isinstance(encoder, ViTModel):
        exported = vit_to_dinov2(encoder) if export_format == "dinov2" else vit_with_identity_pooler(encoder)
    elif isinstance(encoder, SiglipVisionModel):  # a ViT without cls token (SelfPatch)
        if export_format != "vit":
            raise ValueError(
                "--format dinov2 needs a cls token; this encoder has none and exports as a SiglipVisionModel "
                "(omit --format)."
            )
        exported = copy.deepcopy(encoder).eval()
        exported.config.architectures = [type(encoder).__name__]
    else:
        raise TypeError(f"Export supports ViT and ResNet encoders, got {type(encoder).__name__}.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    exported.save_pretrained(out)
    size = input_size(pretrained.config)
    ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), resample=3
    ).save_pretrained(out)
    training = None
    if source_dir is not None and (source_dir / "training_args.json").is_file():
        training = json.loads((source_dir / "training_args.json").read_text())
        (out / "training_args.json").write_text(json.dumps(training, indent=2) + "\n")
    method = getattr(pretrained.config, "model_type", "ssl_mae").removeprefix("ssl_")
    render_card(exported, method, training, results, repo_id or out.name, size).save(out / "README.md")
    return out


def input_size(config) -> int:
    """Training view side of a method config (ViT backbones carry it; ResNet-based configs have `image_size`)."""
    size = getattr(config, "input_size", None) or getattr(config.backbone_config, "image_size", None)
    return size if isinstance(size, int) else 224


def processor_size(export_dir: str | os.PathLike) -> int | None:
    """Input side written in an export's `preprocessor_config.json` (None without one)."""
    path = Path(export_dir) / "preprocessor_config.json"
    if not path.is_file():
        return None
    size = json.loads(path.read_text()).get("size", {})
    return size.get("height") or size.get("shortest_edge")


def update_card(export_dir: str | os.PathLike, results: dict) -> Path:
    """Re-renders an export's `README.md` with evaluation results (keeps weights and configs untouched)."""
    from transformers import AutoModel

    export_dir = Path(export_dir)
    model = AutoModel.from_pretrained(export_dir)
    training_path = export_dir / "training_args.json"
    training = json.loads(training_path.read_text()) if training_path.is_file() else None
    method, repo_id = (training or {}).get("method"), export_dir.name
    readme = export_dir / "README.md"
    if readme.is_file():  # keep what the export wrote: the method tag and the --repo_id (model_name)
        previous = ModelCard.load(readme).data
        repo_id = getattr(previous, "model_name", None) or repo_id
        own_tags = [t for t in (previous.tags or []) if t not in ("self-supervised", "ssl_hf")]
        method = method or (own_tags[0] if own_tags else None)
    card = render_card(model, method or "unknown", training, results, repo_id, processor_size(export_dir))
    card.save(export_dir / "README.md")
    return export_dir / "README.md"


def vit_with_identity_pooler(encoder: ViTModel) -> ViTModel:
    """Copies the encoder into a `ViTModel` whose pooler is fixed: `pooler_output = tanh(cls)`.

    `AutoModel` always builds ViT with a pooler; SSL never trains one, so saving a deterministic one keeps loads
    free of "newly initialised weights" warnings and of random pooler outputs.
    """
    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.pooler_output_size = config.hidden_size
    config.architectures = ["ViTModel"]
    model = ViTModel(config, add_pooling_layer=True)
    result = model.load_state_dict(encoder.state_dict(), strict=False)
    if result.unexpected_keys or any(not k.startswith("pooler.") for k in result.missing_keys):
        raise RuntimeError(f"Encoder weights do not match ViTModel: {result}")
    with torch.no_grad():
        model.pooler.dense.weight.copy_(torch.eye(config.hidden_size))
        model.pooler.dense.bias.zero_()
    return model.eval()


def vit_to_dinov2(encoder: ViTModel) -> Dinov2Model:
    """Maps ViT weights onto `Dinov2Model` (layer scale 1, no SwiGLU): same function, DINOv2's Auto/Backbone classes."""
    c = encoder.config
    config = Dinov2Config(
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        mlp_ratio=c.intermediate_size // c.hidden_size,
        hidden_act=c.hidden_act,
        layer_norm_eps=c.layer_norm_eps,
        image_size=c.image_size,
        patch_size=c.patch_size,
        num_channels=c.num_channels,
        qkv_bias=c.qkv_bias,
        layerscale_value=1.0,
        drop_path_rate=0.0,
        use_swiglu_ffn=False,
        architectures=["Dinov2Model"],
    )
    if c.intermediate_size % c.hidden_size:
        raise ValueError("dinov2 export needs intermediate_size to be a multiple of hidden_size")
    model = Dinov2Model(config)
    state = {}
    for name, value in encoder.state_dict().items():
        if name.startswith("layers."):
            name = "encoder.layer." + name[len("layers.") :]
            name = name.replace(".layernorm_before.", ".norm1.").replace(".layernorm_after.", ".norm2.")
        state[name] = value
    for i in range(c.num_hidden_layers):
        for scale in ("layer_scale1", "layer_scale2"):
            state[f"encoder.layer.{i}.{scale}.lambda1"] = torch.ones(c.hidden_size)
    state["embeddings.mask_token"] = torch.zeros_like(model.embeddings.mask_token)
    model.load_state_dict(state, strict=True)
    return model.eval()


def render_card(
    model: PreTrainedModel,
    method: str,
    training: dict | None,
    results: dict | None,
    repo_id: str,
    image_size: int | None = None,
) -> ModelCard:
    """Renders `model_cards/template.md` with `huggingface_hub.ModelCard` (front matter validated by the Hub)."""
    info_path = CARDS_DIR / f"{method}.yaml"
    info = yaml.safe_load(info_path.read_text()) if info_path.is_file() else {}
    dataset = (training or {}).get("training", {}).get("dataset")
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        license="apache-2.0",
        tags=["self-supervised", "ssl_hf", method, *info.get("tags", [])],
        datasets=[dataset] if dataset and "/" in dataset else None,
        model_name=repo_id,
    )
    native = model.config.model_type.startswith("ssl_") and hasattr(model.config, "backbone_config")
    c = model.config.backbone_config if native else model.config
    resnet = isinstance(c, ResNetConfig)
    cls_free = c.model_type == "siglip_vision_model"
    if resnet:
        details = f"stages {list(c.depths)} ({c.layer_type} blocks), widths {list(c.hidden_sizes)}"
        feature = "outputs.pooler_output.flatten(1)  # global average pool of the last stage"
        pooler_note = "Use `pooler_output` (the average-pooled last stage, flattened) as the image feature."
        image_size = image_size or 224
    else:
        details = (
            f"{c.num_hidden_layers} layers, width {c.hidden_size}, {c.num_attention_heads} heads, patch {c.patch_size}"
        )
        feature = "outputs.last_hidden_state[:, 0]  # cls token"
        image_size = c.image_size
        pooler_note = (
            "Use the cls token `last_hidden_state[:, 0]` (or the mean of the patch tokens) as the image feature. "
        )
        if cls_free:
            feature = "outputs.last_hidden_state.mean(1)  # mean of the patch tokens (there is no cls token)"
            pooler_note = (
                "The encoder has no cls token: `last_hidden_state` holds one token per patch (after the final "
                "LayerNorm), for dense tasks; their mean is the image feature. `pooler_output` is None (no "
                "attention-pooling head)."
            )
        elif native:
            pooler_note += "`pooler_output` is the cls row of `last_hidden_state` (after the encoder adapter)."
        elif c.model_type == "vit":
            pooler_note += "`pooler_output` is `tanh(cls)` through a fixed identity layer (the pooler is not trained)."
        else:
            pooler_note += "`pooler_output` is the normalised cls token."
    plain = "a stock `transformers` model: no `ssl_hf` and no `trust_remote_code` are needed to use it."
    return ModelCard.from_template(
        card_data,
        template_path=str(CARDS_DIR / "template.md"),
        model_name=repo_id,
        repo_id=repo_id,
        model_class=type(model).__name__,
        architecture=f"{'ResNet' if resnet else 'ViT'} ({model.config.model_type} format)",
        architecture_details=details,
        feature_expression=feature,
        loading_note=(
            "This checkpoint keeps the pre-training adapters in ssl_hf's own format: `import ssl_hf` before loading it "
            "(the plain export of the same run needs neither ssl_hf nor `trust_remote_code`)."
            if native
            else "This checkpoint is an ssl_hf model type (a ResNet with a small-image stem, which transformers' "
            "ResNet cannot express): `import ssl_hf` before loading it."
            if model.config.model_type.startswith("ssl_")
            else f"The checkpoint is {plain}"
        ),
        import_line="import ssl_hf  # registers the ssl_hf model types\n"
        if model.config.model_type.startswith("ssl_")
        else "",
        method_title=info.get("method_title", method),
        paper_short=info.get("paper_short", ""),
        method_summary=info.get("method_summary", ""),
        export_note=info.get("export_note", ""),
        image_size=image_size,
        num_params=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M",
        pooler_note=pooler_note,
        training_details=_training_section(training),
        evaluation_table=_evaluation_section(results),
        intended_use=info.get("intended_use", ""),
        bibtex=info.get("bibtex", ""),
    )


def _training_section(training: dict | None) -> str:
    if not training:
        return "Training arguments were not recorded with this checkpoint."
    t, d = training.get("training", {}), training.get("derived", {})
    rows = [
        ("method", training.get("method")),
        ("dataset", f"{t.get('dataset')} (split {t.get('train_split')})"),
        ("optimiser steps", t.get("max_steps")),
        ("global batch", d.get("global_batch_size")),
        ("peak learning rate", d.get("peak_learning_rate")),
        ("weight decay", t.get("weight_decay")),
        (
            "warm-up",
            t.get("warmup_steps") if t.get("warmup_steps") is not None else f"{t.get('warmup_ratio')} of steps",
        ),
        ("precision", t.get("mixed_precision")),
        ("processes", d.get("num_processes")),
        ("seed", t.get("seed")),
    ]
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _evaluation_section(results: dict | None) -> str:
    if not results:
        return "Not evaluated yet: run `ssl-hf evaluate EXPORT --update_card` (or export again with `--results`)."
    lines = ["| backbone | protocol | dataset | top-1 | top-5 |", "|---|---|---|---|---|"]
    for e in results.get("results", [results]):
        if "top1" in e and "top5" in e:
            values = f"{100 * e['top1']:.2f} % | {100 * e['top5']:.2f} %"
        elif "mean_iou" in e:  # dense patch probe: mIoU and pixel accuracy
            values = f"mIoU {e['mean_iou']:.2f} % | pixel acc. {e['pixel_accuracy']:.2f} %"
        else:
            continue
        name = f"{e.get('protocol')} ({e.get('settings', '')})"
        lines.append(f"| {e.get('backbone', 'pretrained')} | {name} | {e.get('dataset')} | {values} |")
    return "\n".join(lines)
