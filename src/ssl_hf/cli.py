"""`ssl-hf pretrain | export | evaluate | push | convert`: argument parsing only; the modules it calls do the work.

`ssl-hf pretrain` accepts every field of the method's config and of the backbone config as `--<field> value`,
every `TrainingArguments` field, and `--config FILE.yaml` (sections `model`, `training`, `data`, or flat keys);
command-line flags win over the file.
"""

import argparse
import dataclasses
import inspect
import json
import logging
import re
import shlex
import sys
import types
import typing
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml


logger = logging.getLogger("ssl_hf")


def _method_fields(spec, backbone_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Own fields (name -> dataclass Field) of the method config and of the backbone's config class."""
    from transformers import PreTrainedConfig, ResNetConfig, ViTConfig

    from ssl_hf.backbones import RESNET_PRESETS, SMALL_STEM_SUFFIX

    base = {f.name for f in dataclasses.fields(PreTrainedConfig)} | {"out_features", "out_indices"}
    method = {f.name: f for f in dataclasses.fields(spec.config_class) if f.name not in base | {"backbone_config"}}
    resnet = backbone_name.removesuffix(SMALL_STEM_SUFFIX) in RESNET_PRESETS
    backbone = {f.name: f for f in dataclasses.fields(ResNetConfig if resnet else ViTConfig) if f.name not in base}
    return method, backbone


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default (or says it is required), unless its text already gives it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or re.search(r"default|required", text):
            return text
        default = {False: "off", True: "on"}.get(action.default) if action.nargs == 0 else action.default
        note = "required" if action.required else f"default: {default}"
        return f"{text[:-1]} ({note})." if text.endswith(".") else f"{text} ({note})".lstrip()


def _documented_fields(config_class: type) -> dict[str, str]:
    """Field name -> its entry under `Args:` in the docstrings of `config_class` and its bases.

    Reads the ssl_hf style (`name: text`) and the transformers style (`name (`type`, ...):` then the text).
    """
    found: dict[str, str] = {}
    for cls in config_class.__mro__:
        doc = inspect.cleandoc(cls.__doc__ or "").split("Args:", 1)
        if len(doc) < 2:
            continue
        for name, text in re.findall(r"^    (\w+)(?: \(.*?\))?:(.*(?:\n {6,}.*)*)", doc[1], flags=re.M):
            found.setdefault(name, " ".join(text.split()))
    return found


def _data_sized(spec, dataset: str) -> dict[str, Any]:
    """For a built-in dataset (32x32 images), the architecture of the method's `-cpu` recipe; else {}.

    Only the sizes: backbone, image and patch size, depth and widths, decoder and head widths (`ssl_hf.cpu_presets`).
    The paper's backbone (`spec.default_backbone` at 224 px, ViT-B: 1.7 GB for a checkpoint) stays the default for
    other data and whenever --backbone, --preset or --init_from is given.
    """
    from ssl_hf.data.builtin import is_builtin
    from ssl_hf.training.arguments import TRAINING_FIELDS

    recipe = spec.presets.get(f"{spec.name}-cpu")
    if not is_builtin(dataset) or recipe is None:
        return {}
    method, backbone = _method_fields(spec, recipe["backbone"])
    sizes = {
        k: v
        for k, v in recipe.items()
        if k == "backbone"
        or (k in backbone and k not in method)
        or (k in method and k not in TRAINING_FIELDS and re.search(r"(_dim|_size|_sizes|_layers|_heads)$", k))
    }
    return sizes


def _is_text(annotation) -> bool:
    """True for `str`, `str | None` and `str | <object>` annotations (values kept verbatim, not YAML-parsed).

    An object is what only Python passes (e.g. an in-memory `datasets.Dataset`); a number or bool is parsed.
    """
    if annotation is str:
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return True
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    return str in args and not set(args) & {int, float, bool}


def _parse_value(text: str, annotation) -> Any:
    """Parses a command-line or YAML text value by its field's annotation (numbers, booleans, lists via YAML)."""
    if _is_text(annotation):
        return None if text.lower() in ("none", "null") and "None" in str(annotation) else text
    value = yaml.safe_load(text)
    allowed = set(typing.get_args(annotation)) or {annotation}
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as text
        for number in (int, float):
            if number in allowed:
                try:
                    return number(text)
                except ValueError:
                    pass
        if allowed <= {int, float, bool, type(None)}:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'")
    return _float_if_float_field(value, annotation)


def _float_if_float_field(value: Any, annotation) -> Any:
    """An integer given to a float field (`--pred_lr_scale 10`, `ema_base: 1` in a file) as a float.

    The strict config classes refuse an int where the field says float.
    """
    allowed = set(typing.get_args(annotation)) or {annotation}
    if type(value) is int and float in allowed and int not in allowed:
        return float(value)
    return value


# Hugging Face Trainer flags whose ssl_hf name difflib would not find
_TRAINER_NAMES = {
    "per_device_train_batch_size": "batch_size",
    "dataloader_num_workers": "num_workers",
    "eval_steps": "eval_every",
    "bf16": "mixed_precision bf16",
    "fp16": "mixed_precision fp16",
}


def _fail(parser: argparse.ArgumentParser, unknown: list[str], known: list[str]) -> None:
    """Exits with one usage error naming every unknown option and the closest known one."""
    messages = []
    for i, token in enumerate(unknown):
        if not token.startswith("--"):
            if i == 0 or not unknown[i - 1].startswith("--"):
                messages.append(f"unexpected value '{token}'")
            continue
        name = token[2:].split("=")[0]
        close = get_close_matches(name.replace("-", "_"), known, n=3, cutoff=0.6)
        if _TRAINER_NAMES.get(name, "").split(" ")[0] in known:
            close = [_TRAINER_NAMES[name]]
        hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
        messages.append(f"unknown option --{name}{hint}")
    parser.error("; ".join(messages) + ". Run with --help for every option.")


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`, but an unknown option is named with the closest known one (before other errors)."""
    known = [o[2:] for action in parser._actions for o in action.option_strings if o.startswith("--")]
    unknown = [t for t in argv if t.startswith("--") and not any(k.startswith(t[2:].split("=")[0]) for k in known)]
    if unknown:
        _fail(parser, unknown, known)
    return parser.parse_args(argv)


def _pretrain(argv: list[str]) -> None:
    import ssl_hf
    from ssl_hf.backbones import BACKBONES, backbone_config
    from ssl_hf.training import TrainingArguments, TrainingInterrupted, pretrain
    from ssl_hf.training.arguments import TRAINING_FIELDS

    head = argparse.ArgumentParser(add_help=False)
    head.add_argument("--method")
    head.add_argument("--config")
    head.add_argument("--preset")
    head.add_argument("--backbone")
    head.add_argument("--dataset")
    head.add_argument("--init_from")
    first, _ = head.parse_known_args(argv)
    file_values: dict[str, Any] = {}
    if first.config:
        loaded = yaml.safe_load(Path(first.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{first.config} must hold a mapping of option names to values.")
        for key, value in loaded.items():
            if key in ("model", "training", "data") and isinstance(value, dict):
                file_values.update(value)
            else:
                file_values[key] = value
    preset_name = first.preset or file_values.pop("preset", None)
    file_values.pop("preset", None)
    method_name = _method_of(first.method or file_values.pop("method", None), preset_name)
    file_values.pop("method", None)
    spec = ssl_hf.get_method(method_name)
    explicit = set(file_values)  # given in the file (the preset's fields are not explicit)
    file_values = {**spec.presets.get(preset_name, {}), **file_values}  # preset < file < command line
    data_sized = {}
    if not (preset_name or first.backbone or first.init_from or {"backbone", "init_from"} & set(file_values)):
        dataset = first.dataset or file_values.get("dataset") or TRAINING_FIELDS["dataset"].default
        data_sized = _data_sized(spec, dataset)
        file_values = {**data_sized, **file_values}
    backbone_name = first.backbone or file_values.get("backbone") or spec.default_backbone
    method_fields, backbone_fields = _method_fields(spec, backbone_name)

    parser = argparse.ArgumentParser(
        formatter_class=_Help,
        prog="ssl-hf pretrain",
        description=f"Pre-train with {method_name}. Method, backbone and training fields are all --<field> value.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--method",
        default=method_name,
        type=str.lower,
        choices=sorted(ssl_hf.METHODS),
        help="Pre-training method, any case (default: the --preset's method, else mae).",
    )
    parser.add_argument(
        "--config", help="YAML file of options: sections model, training, data or flat keys (default: none)."
    )
    parser.add_argument(
        "--preset",
        help=f"Settings of a paper or a -cpu recipe: {', '.join(spec.presets) or 'none'}; a --config file and "
        "flags win (default: none).",
    )
    parser.add_argument(
        "--backbone",
        help=f"Backbone preset: {', '.join(BACKBONES)} (default: on the built-in 32-px datasets the "
        f"{method_name}-cpu recipe's architecture, else {spec.default_backbone}).",
    )
    # the defaults this command line would train with: field defaults < backbone preset < method < preset and file
    defaults = {
        **backbone_config(backbone_name).to_dict(),
        **spec.training_defaults,
        **{k: v for k, v in file_values.items() if k != "backbone"},
    }
    documented = {**_documented_fields(type(backbone_config(backbone_name))), **_documented_fields(spec.config_class)}
    sources = (
        ("training", TRAINING_FIELDS),
        (f"{method_name} config", method_fields),
        (f"backbone config ({backbone_name})", backbone_fields),
    )
    seen: dict[str, Any] = {}
    for title, fields in sources:
        group = parser.add_argument_group(title)
        for name, f in fields.items():
            if name in seen:
                continue  # e.g. a method field shadowing a training field: the first owner wins
            seen[name] = f.type
            default = defaults.get(name, f.default if f.default is not dataclasses.MISSING else None)
            group.add_argument(
                f"--{name}",
                type=lambda text, ann=f.type: _parse_value(text, ann),
                metavar=type(default).__name__.upper() if default is not None else "VALUE",
                help=f"{f.metadata.get('help') or documented.get(name, '')} (default: {default})".lstrip(),
            )
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _fail(parser, unknown, [*seen, "backbone", "method", "config", "preset"])
    if data_sized:
        logger.info(
            "%s holds 32x32 images: %s defaults to the %s-cpu recipe's architecture (%s). Give --backbone or --preset "
            "for another, e.g. --backbone %s for the paper's at 224 px.",
            dataset,
            method_name,
            method_name,
            ", ".join(f"{k} {v}" for k, v in data_sized.items()),
            spec.default_backbone,
        )
    bad_file = [k for k in file_values if k not in seen and k != "backbone"]
    if bad_file:
        _fail(parser, [f"--{k}" for k in bad_file], [*seen, "backbone"])
    for key, value in file_values.items():
        if isinstance(value, str) and key in seen:
            try:
                file_values[key] = _parse_value(value, seen[key])
            except argparse.ArgumentTypeError as err:
                raise ValueError(f"{key} in {first.config}: {err}") from err
        elif key in seen:
            file_values[key] = _float_if_float_field(value, seen[key])
    values = {**file_values, **{k: v for k, v in vars(args).items() if k not in ("method", "config", "preset")}}
    if "num_train_epochs" in explicit | set(vars(args)) and "max_steps" not in explicit | set(vars(args)):
        values.pop("max_steps", None)  # a preset's step budget gives way to the epochs asked for

    training = {k: values.pop(k) for k in list(values) if k in TRAINING_FIELDS}
    if training.get("init_from"):
        explicit |= set(vars(args)) | ({"backbone"} if first.backbone else set())
        given = sorted(k for k in explicit if k not in TRAINING_FIELDS and k not in ("method", "config", "preset"))
        if given:
            raise ValueError(
                f"--init_from takes the model config from {training['init_from']}; these model options would "
                f"change it: {', '.join('--' + k for k in given)}. Drop them (a --preset contributes only its "
                "training settings with --init_from)."
            )
        config = None  # pretrain() reads it from the folder
    else:
        values.pop("backbone", None)
        backbone = {k: values.pop(k) for k in list(values) if k in backbone_fields and k not in method_fields}
        image_size = backbone.pop("image_size", values.get("image_size", 224))  # a method's image_size sets a ViT's
        config = spec.config_class(
            backbone_config=backbone_config(backbone_name, image_size, backbone.pop("patch_size", 16), **backbone),
            **values,
        )
    training.setdefault("output_dir", f"runs/{method_name}")
    try:
        final = pretrain(spec, config, TrainingArguments(**training))
    except KeyboardInterrupt as err:
        if isinstance(err, TrainingInterrupted):  # the step is saved: say how to continue, in one line
            print(
                f"ssl-hf pretrain: stopped by {err.signal_name} after step {err.step}; checkpoint saved to "
                f"{err.checkpoint}. Resume with: {_resume_command(argv)}",
                file=sys.stderr,
            )
            raise SystemExit(err.exit_code) from None
        raise
    print(f"Pre-training finished: {final}")
    curves = final.parent / "training_curves.png"
    if curves.is_file():
        print(f"Loss and online k-NN curves: {curves}")


def _method_of(method: str | None, preset: str | None) -> str:
    """The method of a run: `--method` in any case, else the one `--preset` belongs to, else mae.

    Raises `ValueError` for an unknown method or preset, and when the two disagree, naming both.
    """
    import ssl_hf

    name = method.lower() if method else None
    if name is not None:
        ssl_hf.get_method(name)  # unknown: names the methods
    if preset is None:
        return name or "mae"
    owners = {p: m for m, spec in ssl_hf.METHODS.items() for p in spec.presets}
    if preset not in owners:
        close = get_close_matches(preset, owners, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        listed = "; ".join(f"{m}: {', '.join(s.presets)}" for m, s in sorted(ssl_hf.METHODS.items()) if s.presets)
        raise ValueError(f"Unknown preset '{preset}'.{hint} Presets by method: {listed}.")
    if name is not None and owners[preset] != name:
        own = ", ".join(ssl_hf.METHODS[name].presets) or "none"
        raise ValueError(
            f"--method {method} and --preset {preset} disagree: {preset} is a preset of {owners[preset]}. Drop "
            f"--method (the preset picks its method), or choose a preset of {name}: {own}."
        )
    return owners[preset]


def _resume_command(argv: list[str]) -> str:
    """The `ssl-hf pretrain` command line that continues a run started with `argv`."""
    kept, skip = [], False
    for token in argv:
        if skip or token.startswith("--resume_from_checkpoint"):
            skip = token == "--resume_from_checkpoint"  # its value follows
            continue
        kept.append(token)
    return shlex.join(["ssl-hf", "pretrain", *kept, "--resume_from_checkpoint", "latest"])


def _export(argv: list[str]) -> None:
    from ssl_hf.export import export_pretrained

    parser = argparse.ArgumentParser(formatter_class=_Help, prog="ssl-hf export", description=DESCRIPTIONS["export"])
    parser.add_argument(
        "pretrained",
        help="A run's final/ folder, one of its checkpoints/step_<N> folders, or any ssl_hf save_pretrained folder.",
    )
    parser.add_argument("--output_dir", required=True, help="New (or empty) folder for the export.")
    parser.add_argument("--format", choices=["vit", "dinov2"], default="vit", help="Exported architecture.")
    parser.add_argument("--results", help="Evaluation JSON (from ssl-hf evaluate) to put in the model card.")
    parser.add_argument("--repo_id", help="Hub id used in the card's snippets.")
    parser.add_argument(
        "--license",
        help="Licence id written into the card's metadata, as the Hub lists them: mit, cc-by-nc-4.0, other, ... "
        "(default: apache-2.0).",
    )
    parser.add_argument(
        "--keep_adapters",
        action="store_true",
        help="TEC: keep the input and encoder adapters (ssl_hf format, `import ssl_hf` to load) for "
        "parameter-efficient fine-tuning.",
    )
    args = _parse(parser, argv)
    results = json.loads(Path(args.results).read_text()) if args.results else None
    out = export_pretrained(
        args.pretrained, args.output_dir, args.format, results, args.repo_id, args.keep_adapters, args.license
    )
    exported = json.loads((out / "config.json").read_text())
    print(f"Exported {exported['architectures'][0]} ({exported['model_type']} format) to {out}")


def _method_pool(model: str) -> str:
    """The feature pooling of the method that trained a local export (`MethodSpec.feature_pool`), else `cls`."""
    record = Path(model) / "training_args.json"
    if not record.is_file():
        return "cls"
    import ssl_hf

    method = json.loads(record.read_text()).get("method")
    return ssl_hf.METHODS[method].feature_pool if method in ssl_hf.METHODS else "cls"


def _evaluate(argv: list[str]) -> None:
    from ssl_hf.evaluation import PROTOCOLS, evaluate_backbone

    parser = argparse.ArgumentParser(
        formatter_class=_Help, prog="ssl-hf evaluate", description=DESCRIPTIONS["evaluate"]
    )
    parser.add_argument("model", help="Export folder or Hub id (anything AutoModel.from_pretrained loads).")
    parser.add_argument(
        "--dataset", help="Dataset: built-in name, Hub id, folder... (default: digits; digit-scenes for dense)."
    )
    parser.add_argument(
        "--protocol",
        default="knn",
        help=f"One or more (comma-separated) of {', '.join(PROTOCOLS)}, or all: knn (DINO's weighted k-NN), linear "
        "(MAE-style probe), fewshot (probe on n labels per class), finetune (layer-wise lr decay), dense (patch probe, "
        "mIoU on segmentation), diagnostics (geometry, token similarity, plots).",
    )
    parser.add_argument("--dense_dataset", help="Dataset of the dense protocol next to others (digit-scenes).")
    parser.add_argument("--dense_epochs", type=int, default=10, help="Dense patch-probe epochs.")
    parser.add_argument("--max_train_images", type=int, default=2000, help="Dense: first N train images.")
    parser.add_argument("--max_test_images", type=int, default=1000, help="Dense: first N test images.")
    parser.add_argument("--probe_epochs", type=int, default=100, help="Linear-probe epochs on cached features.")
    parser.add_argument("--probe_optimizer", choices=["sgd", "lars"], default="sgd", help="Linear-probe optimiser.")
    parser.add_argument("--shots", default="1,5,10", help="Few-shot: labelled images per class (comma-separated).")
    parser.add_argument("--fewshot_trials", type=int, default=3, help="Few-shot: random draws per setting.")
    parser.add_argument("--finetune_epochs", type=int, default=3, help="Fine-tune epochs.")
    parser.add_argument(
        "--finetune_max_train_images", type=int, default=2000, help="Fine-tune on N random train images (0: all)."
    )
    parser.add_argument("--layer_decay", type=float, default=0.75, help="Fine-tune layer-wise lr decay.")
    parser.add_argument("--diagnostics_images", type=int, default=1024, help="Diagnostics: test images used.")
    parser.add_argument("--plots_dir", help="Diagnostics plots (default: EXPORT/plots for a local export).")
    parser.add_argument("--output", help="Write the results JSON here.")
    parser.add_argument("--train_split", default="train", help="Split the probes train on (default: train).")
    parser.add_argument("--test_split", default="test", help="Split the results are measured on (default: test).")
    parser.add_argument(
        "--test_fraction",
        type=float,
        help="For a dataset without a test split: test on this fraction of the train split, held out by a shuffle "
        "seeded by --seed, and train on the rest (default: None = use --test_split).",
    )
    parser.add_argument(
        "--label_column", default="label", help="Class column: integer ids or class names (default: label)."
    )
    parser.add_argument("--image_column", help="Image column (default: None = found automatically).")
    parser.add_argument("--k", type=int, default=20, help="k-NN: neighbours that vote.")
    parser.add_argument("--temperature", type=float, default=0.07, help="k-NN: temperature of the neighbour weights.")
    parser.add_argument(
        "--pool",
        choices=["cls", "mean"],
        help="Image feature: cls token or mean of the patch tokens (default: the pooling of the method recorded in "
        "the export's training_args.json, e.g. mean for MAE/ASL/TEC/SelfPatch; else cls).",
    )
    parser.add_argument("--batch_size", type=int, default=256, help="Images per forward pass.")
    parser.add_argument(
        "--random_init",
        action="store_true",
        help="Evaluate the floor instead: the same architecture at step 0 (the method's own init when the export "
        "has training_args.json, the --init_from model's encoder for a run started from one, else transformers'), "
        "BatchNorm statistics from 2048 training images.",
    )
    parser.add_argument(
        "--compare_random_init",
        action="store_true",
        help="Also evaluate the floor (see --random_init), with the same settings and pooling, side by side.",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the probes, the few-shot draws and the --test_fraction hold-out."
    )
    parser.add_argument("--cache_dir", help="Feature cache (default: $SSL_HF_CACHE/features).")
    parser.add_argument("--no_cache", action="store_true", help="Do not read or write cached features.")
    parser.add_argument("--update_card", action="store_true", help="Write the results into the export's README.md.")
    args = _parse(parser, argv)
    protocols = PROTOCOLS if args.protocol == "all" else tuple(p.strip() for p in args.protocol.split(","))
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        parser.error(f"unknown protocol(s) {', '.join(unknown)}; choose from {', '.join(PROTOCOLS)} or all")
    from ssl_hf.training.checkpoints import export_first

    problem = export_first(args.model, "evaluate")
    if problem:
        raise ValueError(problem)
    args.pool = args.pool or _method_pool(args.model)
    dense_only = protocols == ("dense",)
    args.dataset = args.dataset or ("digit-scenes" if dense_only else "digits")
    plots_dir = args.plots_dir
    if plots_dir is None and "diagnostics" in protocols:
        plots_dir = (
            Path(args.model) / "plots" if Path(args.model).is_dir() else Path(args.output or ".").parent / "plots"
        )
    common = dict(
        dense_dataset=args.dataset if dense_only else (args.dense_dataset or "digit-scenes"),
        dense_epochs=args.dense_epochs,
        max_train_images=args.max_train_images,
        max_test_images=args.max_test_images,
        shots=tuple(int(n) for n in args.shots.split(",")),
        fewshot_trials=args.fewshot_trials,
        finetune_epochs=args.finetune_epochs,
        finetune_max_train_images=args.finetune_max_train_images or None,
        layer_decay=args.layer_decay,
        diagnostics_images=args.diagnostics_images,
        plots_dir=plots_dir,
        train_split=args.train_split,
        test_split=args.test_split,
        test_fraction=args.test_fraction,
        label_column=args.label_column,
        image_column=args.image_column,
        k=args.k,
        temperature=args.temperature,
        pool=args.pool,
        batch_size=args.batch_size,
        seed=args.seed,
        probe_epochs=args.probe_epochs,
        probe_optimizer=args.probe_optimizer,
        protocols=protocols,
        cache=not args.no_cache,
        cache_dir=args.cache_dir,
    )
    runs = [args.random_init] + ([True] if args.compare_random_init and not args.random_init else [])
    # the floor twin gets exactly the same settings, pooling included
    results = [res for r in runs for res in evaluate_backbone(args.model, args.dataset, random_init=r, **common)]
    report = {"model": args.model, "dataset": args.dataset, "results": results}
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    if args.update_card:
        from ssl_hf.export import update_card

        update_card(args.model, report)
    print(f"\n{'backbone':<14}{'protocol':<72}  result")
    for r in results:
        name = f"{r['protocol']} ({r['settings']}) on {r['dataset']}"
        floor = f"  [floor: {r['floor']}]" if r.get("floor") else ""
        print(f"{r['backbone']:<14}{name:<72}  {_summary(r)}{floor}")


def _summary(r: dict) -> str:
    """One line per result: accuracies, mIoU or the feature geometry."""
    top5 = r.get("top5_mean", r.get("top5"))
    top5 = "n/a" if top5 is None else f"{100 * top5:.2f} %"  # n/a: 5 classes or fewer
    if "top1_mean" in r:
        return f"top-1 {100 * r['top1_mean']:.2f} ± {100 * r['top1_std']:.2f} %, top-5 {top5}"
    if "top1" in r:
        return f"top-1 {100 * r['top1']:.2f} %, top-5 {top5} ({r.get('num_test', '?')} test images)"
    if "mean_iou" in r:
        return f"mIoU {r['mean_iou']:.2f} %, pixel accuracy {r['pixel_accuracy']:.2f} %"
    similarity = r.get("token_cosine_similarity")
    tokens = "n/a" if similarity is None else f"{similarity:.3f}"
    plots = f", plots in {Path(next(iter(r['plots'].values()))).parent}" if r.get("plots") else ""
    return (
        f"alignment {r['alignment']:.3f}, uniformity {r['uniformity']:.3f}, effective rank "
        f"{r['effective_rank']:.1f}, token similarity {tokens}{plots}"
    )


def _push(argv: list[str]) -> None:
    from ssl_hf.hub import push_to_hub

    parser = argparse.ArgumentParser(formatter_class=_Help, prog="ssl-hf push", description=DESCRIPTIONS["push"])
    parser.add_argument("export", help="An `ssl-hf export` output folder.")
    parser.add_argument("--repo_id", required=True, help="Hub model repo, ORG/NAME (created if missing).")
    parser.add_argument("--private", action="store_true", help="Create the repo private (ignored if it exists).")
    parser.add_argument("--revision", help="Branch to commit to (default main; created from main if missing).")
    parser.add_argument("--commit_message", help="Default: 'Upload <method> encoder (ssl_hf export)'.")
    parser.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT, else https://huggingface.co).")
    parser.add_argument("--token", help="Hub token with write access (default: $HF_TOKEN, else `hf auth login`'s).")
    args = _parse(parser, argv)
    url = push_to_hub(
        args.export,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
        endpoint=args.endpoint,
    )
    print(f"Pushed {args.export} to {args.repo_id}: {url}")


def _convert(argv: list[str]) -> None:
    from ssl_hf.convert import FORMATS, HEADS_BY_WIDTH, convert_checkpoint

    parser = argparse.ArgumentParser(
        formatter_class=_Help,
        prog="ssl-hf convert",
        description="Convert an official released checkpoint (MAE, DINO, iBOT, TEC, SelfPatch, timm ViT, torchvision "
        "ResNet, solo-learn, lightly) into the stock transformers export `ssl-hf export` writes.",
    )
    parser.add_argument(
        "checkpoint", help="The released .pth / .ckpt file (required; read with torch.load(weights_only=True))."
    )
    parser.add_argument(
        "--from",
        dest="source_format",
        required=True,
        choices=list(FORMATS),
        help="Layout of the checkpoint (required): "
        + "; ".join(f"{f.name} ({f.repo})" for f in FORMATS.values())
        + ".",
    )
    parser.add_argument("--output_dir", required=True, help="New (or empty) folder for the export (required).")
    parser.add_argument(
        "--num_attention_heads",
        type=int,
        help="ViT attention heads (default: None = from the width: "
        + ", ".join(f"{w} -> {h}" for w, h in HEADS_BY_WIDTH.items())
        + ").",
    )
    parser.add_argument(
        "--image_size",
        type=int,
        help="Input side in pixels (default: None = the ViT's position grid x patch size; 224 for ResNets). Another "
        "ViT size resizes the position table.",
    )
    parser.add_argument("--repo_id", help="Hub id used in the card's snippets (default: None = the folder name).")
    parser.add_argument(
        "--full",
        action="store_true",
        help="Write the whole ssl_hf pre-training model instead of the encoder export (default: off): MAE *_full.pth "
        "-> MAEForPreTraining (encoder + decoder), DINO full checkpoint -> DINOForPreTraining (student, teacher, "
        "heads, centre), SelfPatch checkpoint -> SelfPatchForPreTraining (also the aggregation head and patch head), "
        "solo-learn / lightly BYOL -> BYOLForPreTraining (online and target networks, heads). Continue with "
        "`ssl-hf pretrain --method M --init_from DIR`. --from mae, dino, selfpatch, solo-learn, lightly.",
    )
    parser.add_argument(
        "--decoder_num_attention_heads",
        type=int,
        help="--full, MAE: decoder attention heads (default: None = 16 for MAE's 512-wide decoders).",
    )
    args = _parse(parser, argv)
    if args.full:
        from ssl_hf.convert.full import convert_full_checkpoint

        if args.image_size is not None or args.repo_id is not None:
            raise ValueError("--image_size and --repo_id apply to the encoder export, not to --full.")
        out = convert_full_checkpoint(
            args.checkpoint,
            args.output_dir,
            args.source_format,
            args.num_attention_heads,
            args.decoder_num_attention_heads,
        )
        model_class = json.loads((out / "conversion.json").read_text())["model_class"]
        print(f"Converted {Path(args.checkpoint).name} ({args.source_format}, full) to {model_class} in {out}")
        return
    if args.decoder_num_attention_heads is not None:
        raise ValueError("--decoder_num_attention_heads applies to --full only.")
    out = convert_checkpoint(
        args.checkpoint, args.output_dir, args.source_format, args.num_attention_heads, args.image_size, args.repo_id
    )
    exported = json.loads((out / "config.json").read_text())
    print(f"Converted {Path(args.checkpoint).name} ({args.source_format}) to {exported['architectures'][0]} in {out}")


COMMANDS = {"pretrain": _pretrain, "export": _export, "evaluate": _evaluate, "push": _push, "convert": _convert}
DESCRIPTIONS = {
    "pretrain": "Pre-train a method on images: checkpoints, metrics.jsonl and a final/ model in --output_dir.",
    "export": "Save a run's encoder as a stock transformers model with a model card.",
    "evaluate": "Measure an export: k-NN, linear probe, few-shot, fine-tune, dense probe, diagnostics.",
    "push": "Upload an export folder to the Hugging Face Hub in one commit.",
    "convert": "Turn an official released checkpoint (MAE, DINO, TEC, ...) into an export.",
}


def _overview() -> str:
    """The top-level help: the commands with one line each."""
    from ssl_hf import __version__

    commands = "\n".join(f"  {name:<10}{DESCRIPTIONS[name]}" for name in COMMANDS)
    return (
        f"usage: ssl-hf {{{','.join(COMMANDS)}}} [options]\n\n"
        f"Self-supervised vision pre-training as Hugging Face models (ssl_hf {__version__}).\n\n"
        f"commands:\n{commands}\n\n"
        "options:\n  -h, --help  show this help and exit\n  --version   print the version and exit\n\n"
        "Run `ssl-hf <command> --help` for the options of a command, e.g. ssl-hf pretrain --preset mae-cpu --help."
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `ssl-hf` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:
        from ssl_hf import __version__

        print(f"ssl-hf {__version__}")
        return
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        given = f"unknown command '{argv[0]}'.\n" if argv and argv[0] not in ("-h", "--help") else ""
        print(given + _overview())
        raise SystemExit(2 if given or not argv else 0)
    import ssl_hf.api  # noqa: F401  (registers every method with the Auto classes; the console script defers it to here)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

    try:
        COMMANDS[argv[0]](argv[1:])
    except KeyboardInterrupt:  # before the first step or outside pretrain: nothing to save
        print(f"ssl-hf {argv[0]}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (
        ValueError,
        FileNotFoundError,
        StrictDataclassClassValidationError,
        StrictDataclassFieldValidationError,
    ) as err:
        print(f"ssl-hf {argv[0]}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
