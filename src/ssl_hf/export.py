"""Export: the encoder of a pre-training checkpoint as a stock transformers model + processor + model card (D1, D8)."""

import copy
import json
import os
from pathlib import Path
from typing import Literal

import torch
from transformers import Dinov2Config, Dinov2Model, PreTrainedModel, ResNetModel, SiglipVisionModel, ViTModel
from transformers import ViTImageProcessorPil as ViTImageProcessor

from .cards import CARDS_DIR, card_eval_results, processor_size, render_card, update_card
from .data.pixels import IMAGENET_MEAN, IMAGENET_STD
from .published import (
    LOCAL_RECORD,
    PLOTS,
    hub_id,
    license_id,
    linked_plots,
    merged_results,
    published_record,
    published_rows,
    remove_plots,
    store_results,
    stored_results,
)


__all__ = [  # the card functions moved to `ssl_hf.cards`; importable here as before
    "CARDS_DIR",
    "ExportFormat",
    "card_eval_results",
    "export_pretrained",
    "exported_encoder",
    "hub_id",
    "input_size",
    "processor_size",
    "render_card",
    "update_card",
    "vit_to_dinov2",
    "vit_with_identity_pooler",
    "write_processor",
]

ExportFormat = Literal["vit", "dinov2"]


def export_pretrained(
    pretrained: str | os.PathLike | PreTrainedModel,
    output_dir: str | os.PathLike,
    export_format: ExportFormat = "vit",
    results: dict | None = None,
    repo_id: str | None = None,
    keep_adapters: bool = False,
    license: str | None = None,
) -> Path:
    """Writes the method's encoder as a plain transformers checkpoint that `AutoModel.from_pretrained` loads.

    Args:
        pretrained: A `<M>ForPreTraining`, the folder of its `save_pretrained` (e.g. `RUN/final`) or a checkpoint
            of a run (`RUN/checkpoints/step_<N>`).
        output_dir: Destination folder (created).
        export_format: `vit` (`ViTModel`) or `dinov2` (`Dinov2Model`; also loads with `Dinov2Backbone`).
        results: Evaluation results (`ssl-hf evaluate` JSON) to put in the model card.
        repo_id: Hub id shown in the card's snippets (defaults to the folder name).
        keep_adapters: Keep the pre-training adapters (TEC) for parameter-efficient fine-tuning: saves the method's
            own encoder model (e.g. `TECModel`), which loads with `AutoModel` after `import ssl_hf`.
        license: Licence id for the card's metadata (e.g. `mit`, `cc-by-nc-4.0`; `published.license_id`); default
            apache-2.0.

    Returns:
        The output folder, holding `config.json`, `model.safetensors`, `preprocessor_config.json` and `README.md`;
        `training_args.json` (the run record without local paths, `published.published_record`) for a run's folder;
        `eval_results.json` with the card's results. Exporting again into the same folder keeps the results (and
        the plots they link) of the card it overwrites, merged with `results`; other plots are removed.

    Raises:
        ValueError: `license` is not a licence id.
    """
    license = license_id(license)
    training = None
    if not isinstance(pretrained, PreTrainedModel):
        import ssl_hf  # noqa: F401  registers the Auto classes

        from .training.checkpoints import load_pretraining_folder

        pretrained, training = load_pretraining_folder(pretrained)
    exported = exported_encoder(pretrained, export_format, keep_adapters)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    exported.save_pretrained(out)
    size = input_size(pretrained.config)
    write_processor(out, size)
    (out / LOCAL_RECORD).unlink(missing_ok=True)
    published = published_record(training) if training is not None else None
    if training is not None:
        (out / "training_args.json").write_text(json.dumps(published, indent=2) + "\n")
        if published != json.loads(json.dumps(training, default=str)):  # the floor is rebuilt from the local paths
            (out / LOCAL_RECORD).write_text(json.dumps(training, indent=2, default=str) + "\n")
    method = getattr(pretrained.config, "model_type", "ssl_mae").removeprefix("ssl_")
    base_model = getattr(pretrained.config, "base_model", None)  # TEC: the model its targets came from
    rows = merged_results(stored_results(out), published_rows(results, out))  # the overwritten card's results stay
    card = render_card(
        exported,
        method,
        published,
        {"results": rows},
        repo_id or out.name,
        size,
        base_model=base_model,
        license=license,
    )
    card.save(out / "README.md")
    store_results(out, rows)
    if (out / PLOTS).is_dir():  # plots of the results dropped from the card
        remove_plots(out, {p.name for p in (out / PLOTS).iterdir()} - linked_plots(rows))
    return out


def write_processor(
    output_dir: str | os.PathLike,
    size: int,
    image_mean: tuple[float, ...] = IMAGENET_MEAN,
    image_std: tuple[float, ...] = IMAGENET_STD,
) -> None:
    """Writes the export's `preprocessor_config.json`: resize to `(size, size)` (bicubic), rescale 1/255, normalise.

    Args:
        output_dir: The export folder.
        size: Input side in pixels.
        image_mean: Per-channel mean of the normalisation (ImageNet's by default, as every ssl_hf view).
        image_std: Per-channel standard deviation of the normalisation.
    """
    ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=list(image_mean), image_std=list(image_std), resample=3
    ).save_pretrained(output_dir)


def exported_encoder(
    pretrained: PreTrainedModel, export_format: ExportFormat = "vit", keep_adapters: bool = False
) -> PreTrainedModel:
    """The model `export_pretrained` saves: the method's encoder (`get_export_backbone`) in the export format.

    Args:
        pretrained: A `<M>ForPreTraining`.
        export_format: `vit` (`ViTModel` with a fixed identity pooler; ResNet and SigLIP encoders as themselves) or
            `dinov2` (`Dinov2Model`).
        keep_adapters: TEC: the method's own encoder model with its adapters (`get_adapter_model`).

    Returns:
        A copy in eval mode (`pretrained` is left untouched).
    """
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
    return exported


def input_size(config) -> int:
    """Training view side of a method config (ViT backbones carry it; ResNet-based configs have `image_size`)."""
    size = getattr(config, "input_size", None) or getattr(config.backbone_config, "image_size", None)
    return size if isinstance(size, int) else 224


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
