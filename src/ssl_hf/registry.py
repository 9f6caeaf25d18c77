"""The method registry: one entry per pre-training method, filled by each `models/<m>/__init__.py`."""

from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from transformers import AutoConfig, AutoModelForPreTraining, PreTrainedConfig, PreTrainedModel


@dataclass(frozen=True)
class MethodSpec:
    """What the training loop, the CLI and the exporter need to know about a method.

    Attributes:
        name: CLI name (`mae`, `asl`, ...).
        config_class: The method's `PreTrainedConfig`.
        model_class: The method's `<M>ForPreTraining`.
        views: Name of the views preset in `ssl_hf.data.views`.
        training_defaults: Paper defaults for `TrainingArguments` fields the user did not set
            (e.g. `base_learning_rate`, `weight_decay`, `adam_beta2`).
        presets: Named paper settings (`--preset NAME`): backbone, config and training fields; anything given in a
            `--config` file or on the command line wins.
        default_backbone: Backbone preset when none is given (`--backbone`).
        feature_pool: Image feature the exported encoder is evaluated with: `cls`, or `mean` of the patch tokens (the
            MAE family, whose losses never train the cls token; SelfPatch, which has none).
    """

    name: str
    config_class: type[PreTrainedConfig]
    model_class: type[PreTrainedModel]
    views: str
    training_defaults: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_backbone: str = "vit-base"
    feature_pool: str = "cls"


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> None:
    """Registers a method with the Auto classes and with `METHODS`."""
    AutoConfig.register(spec.config_class.model_type, spec.config_class, exist_ok=True)
    AutoModelForPreTraining.register(spec.config_class, spec.model_class, exist_ok=True)
    METHODS[spec.name] = spec


def get_method(name: str) -> MethodSpec:
    """Returns the spec of a registered method, or raises with the valid names."""
    if name not in METHODS:
        close = get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown method '{name}'.{hint} Available methods: {', '.join(sorted(METHODS))}.")
    return METHODS[name]
