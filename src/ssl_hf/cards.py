"""Model cards of exports: rendering `model_cards/template.md`, reading results into it, re-rendering (D8)."""

import json
import logging
import os
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedModel, ResNetConfig

from .data.builtin import is_builtin
from .published import (
    DEFAULT_LICENSE,
    hub_id,
    linked_plots,
    merged_results,
    published_name,
    published_rows,
    remove_plots,
    result_rows,
    store_results,
    stored_results,
)


logger = logging.getLogger(__name__)

CARDS_DIR = Path(__file__).parent / "model_cards"


def render_card(
    model: PreTrainedModel,
    method: str,
    training: dict | None,
    results: dict | None,
    repo_id: str,
    image_size: int | None = None,
    base_model: str | None = None,
    conversion: dict | None = None,
    license: str | None = None,
) -> ModelCard:
    """Renders `model_cards/template.md` with `huggingface_hub.ModelCard`.

    The front matter holds what the Hub reads: `library_name`, `pipeline_tag`, `license`, `tags`, `datasets` (the
    training dataset when it is a Hub id), `base_model` (TEC's base model when it is a Hub id) and a `model-index`
    built from `results` (the model's own rows, see `card_eval_results`).

    Args:
        model: The exported model (its config gives the architecture and the feature snippet).
        method: Method name (`mae`, `tec`, ...): selects `model_cards/<method>.yaml`.
        training: Content of `training_args.json` (None when the run's arguments were not recorded).
        results: `ssl-hf evaluate` JSON (`{"results": [...]}`, or a single result row).
        repo_id: Hub id used in the snippets and as the `model-index` name.
        image_size: Input side; ViT configs carry their own.
        base_model: Path or Hub id of the model this one learnt from (TEC's `base_model`); read from the recorded
            `model_config` when None.
        conversion: The `conversion.json` of an `ssl-hf convert` export: its `card` entries (source note, paper,
            bibtex, license, training note, intended use, limitations, ...) replace the method's yaml text.
        license: Licence id of the card's metadata (`published.license_id`); default: the method's yaml or the
            conversion's, else apache-2.0.

    Returns:
        The rendered card (`card.save(path)` writes `README.md`).
    """
    info_path = CARDS_DIR / f"{method}.yaml"
    info = yaml.safe_load(info_path.read_text()) if info_path.is_file() else {}
    converted = (conversion or {}).get("card") or {}
    info = {**info, **converted, "tags": list(dict.fromkeys([*info.get("tags", []), *converted.get("tags", [])]))}
    t = (training or {}).get("training", {})
    dataset = t.get("dataset")
    recorded = (training or {}).get("model_config") or {}
    base_model = base_model or recorded.get("base_model")
    base_revision = recorded.get("base_model_revision")
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        license=license or info.get("license", DEFAULT_LICENSE),
        tags=["self-supervised", "ssl_hf", method, *info.get("tags", [])],
        datasets=[hub_id(dataset)] if hub_id(dataset) else None,
        base_model=hub_id(base_model),
        model_name=repo_id,
        eval_results=card_eval_results(results) or None,
    )
    native = model.config.model_type.startswith("ssl_") and hasattr(model.config, "backbone_config")
    c = model.config.backbone_config if native else model.config
    resnet = isinstance(c, ResNetConfig)
    cls_free = c.model_type == "siglip_vision_model"
    call = 'extractor("image.jpg", return_tensors=True'
    if resnet:
        details = f"stages {list(c.depths)} ({c.layer_type} blocks), widths {list(c.hidden_sizes)}"
        if c.downsample_in_first_stage:
            details += ", first stage stride 2"
        feature = f"{call}, pool=True).flatten(1)  # global average pool, shape (1, {c.hidden_sizes[-1]})"
        pooler_note = "With `model`, the image feature is `pooler_output.flatten(1)` (the average-pooled last stage)."
        image_size = image_size or 224
    else:
        details = (
            f"{c.num_hidden_layers} layers, width {c.hidden_size}, {c.num_attention_heads} heads, patch {c.patch_size}"
        )
        feature = f"{call})[:, 0]  # the cls token, shape (1, {c.hidden_size})"
        image_size = c.image_size
        pooler_note = (
            "Use the cls token `last_hidden_state[:, 0]` (or the mean of the patch tokens) as the image feature. "
        )
        if cls_free:
            feature = f"{call}).mean(1)  # mean of the patch tokens (no cls token), shape (1, {c.hidden_size})"
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
    pooler_note += (
        f' For batches, hidden states or fine-tuning, call `model(**AutoImageProcessor.from_pretrained("{repo_id}")'
        '(images, return_tensors="pt"))`.'
    )
    plain = "a stock `transformers` model: no `ssl_hf` and no `trust_remote_code` are needed to use it."
    return ModelCard.from_template(
        card_data,
        template_path=str(CARDS_DIR / "template.md"),
        model_name=repo_id,
        repo_id=repo_id,
        model_class=type(model).__name__,
        architecture=f"{'ResNet' if resnet else 'ViT'} ({model.config.model_type} format)",
        architecture_details=details,
        feature_call=feature,
        loading_note=(
            "This checkpoint keeps the pre-training adapters in ssl_hf's own format: `import ssl_hf` before loading "
            "it (the plain export of the same run needs neither ssl_hf nor `trust_remote_code`)."
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
        base_model_note=_base_model_note(base_model, base_revision),
        image_size=image_size,
        num_params=_count(sum(p.numel() for p in model.parameters())),
        pooler_note=pooler_note,
        training_details=converted.get("training_note") or _training_section(training),
        source_note=converted.get("source_note", ""),
        evaluation_table=_evaluation_section(results),
        intended_use=info.get("intended_use", ""),
        limitations=info.get("limitations", ""),
        bibtex=info.get("bibtex", ""),
    )


def processor_size(export_dir: str | os.PathLike) -> int | None:
    """Input side written in an export's `preprocessor_config.json` (None without one)."""
    path = Path(export_dir) / "preprocessor_config.json"
    if not path.is_file():
        return None
    size = json.loads(path.read_text()).get("size", {})
    return size.get("height") or size.get("shortest_edge")


def update_card(export_dir: str | os.PathLike, results: dict) -> Path:
    """Re-renders an export's `README.md` with evaluation results merged into its earlier ones (weights untouched).

    The results are merged into the export's `eval_results.json` (`published.merged_results`): a new row replaces
    the row of the same protocol, backbone and dataset, the others stay, and plots only the replaced rows linked are
    deleted. The method, the repo id (`model_name`), the licence and the base model come from `training_args.json`
    when the export has one, else from the card the export wrote. The card of an `ssl-hf convert` export keeps its
    source (`conversion.json`).

    Args:
        export_dir: An `ssl-hf export` folder.
        results: `ssl-hf evaluate` JSON (`{"results": [...]}`).

    Returns:
        The path of the rewritten `README.md`.
    """
    from transformers import AutoModel

    export_dir = Path(export_dir)
    model = AutoModel.from_pretrained(export_dir)
    training_path = export_dir / "training_args.json"
    training = json.loads(training_path.read_text()) if training_path.is_file() else None
    method, repo_id, base_model, license = (training or {}).get("method"), export_dir.name, None, None
    readme = export_dir / "README.md"
    if readme.is_file():  # keep what the export wrote: method tag, --repo_id (model_name), --license, base model
        previous = ModelCard.load(readme).data
        repo_id = getattr(previous, "model_name", None) or repo_id
        license = getattr(previous, "license", None)
        own_tags = [t for t in (previous.tags or []) if t not in ("self-supervised", "ssl_hf")]
        method = method or (own_tags[0] if own_tags else None)
        if not ((training or {}).get("model_config") or {}).get("base_model"):
            base_model = getattr(previous, "base_model", None)  # a Hub id only: local paths are not in the metadata
    conversion_path = export_dir / "conversion.json"  # an `ssl-hf convert` export keeps its source in the card
    conversion = json.loads(conversion_path.read_text()) if conversion_path.is_file() else None
    method = method or (conversion or {}).get("method")
    previous_rows = stored_results(export_dir)
    rows = merged_results(previous_rows, published_rows(results, export_dir))
    card = render_card(
        model,
        method or "unknown",
        training,
        {"results": rows},
        repo_id,
        processor_size(export_dir),
        base_model=base_model,
        conversion=conversion,
        license=license,
    )
    card.save(readme)
    store_results(export_dir, rows)
    remove_plots(export_dir, linked_plots(previous_rows) - linked_plots(rows))
    return readme


_RANDOM_INIT = ("random_init", "random-init", "random")
_IMAGE_PROTOCOLS = ("knn", "linear", "fewshot", "finetune")
_NOT_APPLICABLE = "n/a"  # top-5 of a set of 5 classes or fewer (None in the results: `evaluation.knn.topk_accuracy`)


def card_eval_results(results: dict | None) -> list[EvalResult]:
    """The model's own evaluation results as `huggingface_hub.EvalResult`s (the card's `model-index`).

    Image-level rows (`knn`, `linear`, `finetune`: `top1`, `top5` in [0, 1]; `fewshot`: `shots`, `trials`,
    `classifier`, `top1_mean`, `top1_std`, `top5_mean`, `top5_std`, the mean as the value, the std in `metric_args`)
    become `image-classification` results with `accuracy` (top-1) and `top-5 accuracy` in percent; dense rows
    (`mean_iou`, `pixel_accuracy`, already in percent) become `image-segmentation` results with `mean_iou` and
    `pixel accuracy`. Random-init rows (a floor, not this model) and rows of unknown protocols are left out; of two
    rows giving the same metric on the same data the later one is kept.

    Args:
        results: `ssl-hf evaluate` JSON (`{"results": [...]}`, or a single result row); None gives `[]`.

    Returns:
        The results, in the order of the rows.
    """
    kept: dict[tuple, EvalResult] = {}
    for row in result_rows(results):
        if _is_random_init(row) or not row.get("dataset"):
            continue
        for result in _row_eval_results(row):
            kept[(result.unique_identifier, result.metric_type, result.metric_name)] = result
    return list(kept.values())


def _is_random_init(row: dict) -> bool:
    return str(row.get("backbone", "pretrained")).lower() in _RANDOM_INIT


def _number(value) -> float | None:
    """A finite float, or None for anything else (missing, None, text, NaN, bools)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        return None
    return float(value)


def _dataset_fields(row: dict) -> dict:
    name = str(row["dataset"])
    if is_builtin(name):
        pretty, type_ = f"{name} (ssl_hf built-in)", name
    elif hub_id(name):
        pretty = type_ = name
    else:  # a local folder or files: its last part names it
        pretty = type_ = Path(name.split(",")[0]).name or name
    return {
        "dataset_type": type_,
        "dataset_name": pretty,
        "dataset_config": row.get("dataset_config"),
        "dataset_split": row.get("split"),
    }


def _protocol_label(row: dict) -> tuple[str, str]:
    """(short name, details) of a row's protocol, e.g. ("k-NN", "k=20, T=0.07, cls")."""
    protocol, settings, pool = row.get("protocol"), row.get("settings") or "", row.get("pool")
    if protocol == "knn":
        if row.get("k") is not None and row.get("temperature") is not None:
            settings = ", ".join(str(s) for s in (f"k={row['k']}", f"T={row['temperature']}", pool) if s)
        return "k-NN", settings
    if protocol == "linear":
        if row.get("epochs") is not None:
            settings = ", ".join(s for s in (f"{row['epochs']} epochs", pool) if s)
        return "linear probe", settings
    if protocol == "fewshot":
        if row.get("trials") is not None:
            settings = f"mean of {row['trials']} trials"
        return f"{row.get('shots', '?')}-shot {row.get('classifier') or ''}".strip(), settings
    if protocol == "finetune":
        if row.get("epochs") is not None:
            settings = ", ".join(s for s in (f"{row['epochs']} epochs", pool) if s)
        return "fine-tune", settings
    if row.get("epochs") is not None:  # dense
        settings = f"{row['epochs']} epochs" + (f", patch {row['patch_size']}" if row.get("patch_size") else "")
    return "dense patch probe", settings


def _row_eval_results(row: dict) -> list[EvalResult]:
    protocol = row.get("protocol")
    short, details = _protocol_label(row)
    suffix = f" ({details})" if details else ""
    if protocol in _IMAGE_PROTOCOLS:
        task = {"task_type": "image-classification", "task_name": "Image Classification"}
        if protocol == "fewshot":  # the mean over trials; the std (percent) and the draw go in `args`
            metrics = []
            for key, metric_type, label in (("top1", "accuracy", "top-1"), ("top5", "top-5 accuracy", "top-5")):
                std = _number(row.get(f"{key}_std"))
                args = {"shots": row.get("shots"), "trials": row.get("trials")}
                args = {**args, "std": None if std is None else round(100 * std, 2)}
                args = {a: v for a, v in args.items() if v is not None} or None
                metrics.append((metric_type, f"{short} {label}{suffix}", _number(row.get(f"{key}_mean")), args))
        else:
            top1, top5 = _number(row.get("top1")), _number(row.get("top5"))
            metrics = [("accuracy", f"{short} top-1{suffix}", top1, None)]
            metrics.append(("top-5 accuracy", f"{short} top-5{suffix}", top5, None))
        metrics = [(t, n, None if v is None else round(100 * v, 2), a) for t, n, v, a in metrics]
    elif protocol == "dense":
        task = {"task_type": "image-segmentation", "task_name": "Image Segmentation"}
        metrics = [
            ("mean_iou", f"{short} mIoU{suffix}", _number(row.get("mean_iou")), None),
            ("pixel accuracy", f"{short} pixel accuracy{suffix}", _number(row.get("pixel_accuracy")), None),
        ]
        metrics = [(t, n, None if v is None else round(v, 2), a) for t, n, v, a in metrics]
    else:
        return []
    data = _dataset_fields(row)
    return [
        EvalResult(**task, **data, metric_type=t, metric_name=n, metric_value=v, metric_args=a)
        for t, n, v, a in metrics
        if v is not None
    ]


def _base_model_note(base_model: str | None, revision: str | None = None) -> str:
    """Markdown naming the model this one learnt from (TEC): a Hub link, or the local path it was read from."""
    if not base_model:
        return ""
    at = f" (revision `{revision}`)" if revision else ""
    if hub_id(base_model):
        return (
            f"[{base_model}](https://huggingface.co/{base_model}){at} (frozen; its outputs were the training targets)."
        )
    name = published_name(base_model)
    return f"a local checkpoint, `{name}`{at}, not on the Hub (frozen; its outputs were the training targets)."


def _dataset_note(dataset: str | None, config: str | None = None, split: str | None = None) -> str:
    """Markdown naming a training dataset: a Hub link, a built-in set, or a local source (with config and split)."""
    where = ", ".join(x for x in (f"configuration {config}" if config else "", f"split {split}" if split else "") if x)
    where = f" ({where})" if where else ""
    if not dataset:
        return f"not recorded{where}"
    if is_builtin(dataset):
        return f"{dataset}{where}: ssl_hf's built-in synthetic set, not a Hub dataset"
    if hub_id(dataset):
        return f"[{dataset}](https://huggingface.co/datasets/{dataset}){where}"
    return f"`{published_name(dataset)}`{where}: local data"


def _training_section(training: dict | None) -> str:
    """Markdown table of the recorded training arguments (`training_args.json`)."""
    if not training:
        return "Training arguments were not recorded with this checkpoint."
    t, d = training.get("training", {}), training.get("derived", {})
    rows = [
        ("method", training.get("method")),
        ("dataset", _dataset_note(t.get("dataset"), t.get("dataset_config"), t.get("train_split"))),
        ("optimiser steps", d.get("checkpoint_step", t.get("max_steps"))),  # an exported checkpoint: its step
        ("global batch", d.get("global_batch_size")),
        ("peak learning rate", _peak_lr_reached(t, d)),
        ("weight decay", t.get("weight_decay")),
        (
            "warm-up",
            t.get("warmup_steps")
            if t.get("warmup_steps") is not None or t.get("warmup_ratio") is None
            else f"{t['warmup_ratio']} of steps",
        ),
        ("precision", t.get("mixed_precision")),
        ("processes", d.get("num_processes")),
        ("seed", t.get("seed")),
    ]
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _peak_lr_reached(t: dict, d: dict) -> str | float | None:
    """The peak learning rate the run reached: the recorded peak, or less when it stopped during the warm-up.

    The lr of step `s < W` (`W` warm-up steps) is `peak * (s + 1) / W` (`training.schedules.cosine_with_warmup`), so a
    run of `n` steps reached `peak * min(1, n / W)`; below `W` steps its card says it ended in the warm-up.
    """
    peak = _number(d.get("peak_learning_rate"))
    steps = d.get("checkpoint_step", t.get("max_steps"))  # an exported checkpoint: the steps it had run
    warmup = t.get("warmup_steps")
    if warmup is None and _number(t.get("warmup_ratio")) is not None and isinstance(t.get("max_steps"), int):
        warmup = round(t["warmup_ratio"] * t["max_steps"])  # as the loop resolves it
    if peak is None or not isinstance(steps, int) or not isinstance(warmup, int) or steps >= warmup:
        return d.get("peak_learning_rate")
    return f"{peak * steps / warmup:.3g} (ended in warm-up: step {steps} of {warmup}; configured peak {peak:.3g})"


def _count(n: int) -> str:
    """Parameter count for the text: `86.4 M`, or the exact number below 100 k."""
    return f"{n / 1e6:.1f} M" if n >= 100_000 else f"{n:,}"


def _mean_std(mean: float | None, std: float | None) -> str:
    """`40.00 ± 2.00 %` from fractions (`-` without a mean)."""
    return _percent(mean) if mean is None or std is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"


def _percent(value: float | None, scale: float = 100.0) -> str:
    return "-" if value is None else f"{scale * value:.2f} %"


def _backbone_cell(row: dict) -> str:
    """A row's backbone, e.g. `pretrained`, or `random_init (MAE init at step 0, seed 0)` when it names its floor."""
    backbone = str(row.get("backbone", "pretrained"))
    return f"{backbone} ({row['floor']})" if _is_random_init(row) and row.get("floor") else backbone


def _evaluation_section(results: dict | None) -> str:
    """Markdown tables of the results: image-level (top-1 / top-5) and dense (mIoU / pixel accuracy) rows."""
    rows = result_rows(results)
    if not rows:
        return "Not evaluated yet: run `ssl-hf evaluate EXPORT --update_card` (or export again with `--results`)."
    image, dense, geometry, plots, floor = [], [], [], [], False
    for e in rows:
        protocol, settings = e.get("protocol"), e.get("settings") or ""
        if protocol == "diagnostics":  # feature geometry, and the plots when they were written next to the card
            similarity = _number(e.get("token_cosine_similarity"))
            geometry.append(
                f"| {_backbone_cell(e)} | {published_name(e.get('dataset'))} | {_number(e.get('alignment')):.3f} | "
                f"{_number(e.get('uniformity')):.3f} | {_number(e.get('effective_rank')):.1f} | "
                f"{'n/a' if similarity is None else f'{similarity:.3f}'} |"
            )
            plots += [Path(path) for path in (e.get("plots") or {}).values()]
            floor = floor or _is_random_init(e)
            continue
        if protocol == "fewshot":
            short, details = _protocol_label(e)
            settings = ", ".join(x for x in (short, settings or details) if x)
            top1, top5 = (_mean_std(_number(e.get(f"{k}_mean")), _number(e.get(f"{k}_std"))) for k in ("top1", "top5"))
            values = (_number(e.get("top1_mean")), top1, _NOT_APPLICABLE if top5 == "-" else top5)
        elif protocol in _IMAGE_PROTOCOLS:
            top1, top5 = _number(e.get("top1")), _number(e.get("top5"))
            values = (top1, _percent(top1), _NOT_APPLICABLE if top5 is None else _percent(top5))
        elif protocol == "dense":
            miou = _number(e.get("mean_iou"))
            values = (miou, _percent(miou, 1), _percent(_number(e.get("pixel_accuracy")), 1))
        else:
            logger.warning("Model card: skipping a result of unknown protocol %r.", protocol)
            continue
        if values[0] is None:
            logger.warning("Model card: skipping a %s result without its main metric.", protocol)
            continue
        name = f"{protocol} ({settings})" if settings else protocol
        line = f"| {_backbone_cell(e)} | {name} | {published_name(e.get('dataset'))} | {values[1]} | {values[2]} |"
        (dense if protocol == "dense" else image).append(line)
        floor = floor or _is_random_init(e)
    parts = []
    if image:
        parts.append("| backbone | protocol | dataset | top-1 | top-5 |\n|---|---|---|---|---|\n" + "\n".join(image))
    if dense:
        header = "| backbone | protocol | dataset | mIoU | pixel accuracy |\n|---|---|---|---|---|\n"
        parts.append(header + "\n".join(dense))
    if geometry:
        header = (
            "Feature geometry (alignment of two augmented views: lower is closer; uniformity: lower is more spread; "
            "effective rank of the features; mean cosine similarity of an image's patch tokens):\n\n"
            "| backbone | dataset | alignment | uniformity | effective rank | token similarity |\n"
            "|---|---|---|---|---|---|\n"
        )
        parts.append(header + "\n".join(geometry))
        # plots written inside the export folder (`EXPORT/plots/`) are linked relative to the card
        parts += [f"![{p.stem}](plots/{p.name})" for p in plots if p.parent.name == "plots"]
    if not parts:
        return "No result of a protocol this card shows (knn, linear, fewshot, finetune, dense) was given."
    if floor:
        parts.append(
            "`random_init` rows evaluate the same architecture with the weights it had before training (the floor, "
            "named in brackets when recorded): a floor for the numbers above, not results of this model (they are "
            "left out of the card's `model-index` metadata)."
        )
    return "\n\n".join(parts)
