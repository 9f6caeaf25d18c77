"""`--init_from DIR`: a new pre-training run that starts from the weights of a saved pre-training model.

DIR is a `save_pretrained` folder of the same method's `<M>ForPreTraining`: a run's `final/` folder or the output of
`ssl-hf convert --full`. The model config comes from DIR; every weight and persistent buffer (decoder, teacher, heads,
centres) is loaded; the optimiser, the lr / weight-decay / momentum schedules and the method's own schedule state
(DINO's `progress`: teacher-temperature warm-up, frozen last layer) restart at step 0.
"""

import json
from pathlib import Path

from transformers import PreTrainedConfig

from ..modeling_base import SSLPreTrainedModel
from ..registry import METHODS, MethodSpec


# model types of encoder exports (`ssl-hf export`, `ssl-hf convert` without --full)
_ENCODER_TYPES = ("vit", "dinov2", "resnet", "siglip_vision_model", "ssl_resnet_small_stem")


def read_init_config(spec: MethodSpec, init_from: str | Path) -> PreTrainedConfig:
    """The method config saved in DIR, after checking that DIR holds `spec`'s pre-training model.

    Raises:
        ValueError: DIR is missing, holds another method's model, or an encoder export (with what to do instead).
    """
    path = Path(init_from)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"--init_from {path}: no config.json there. Give a save_pretrained folder of a {spec.name} pre-training "
            "model: a run's final/ folder, or the output of `ssl-hf convert --full`."
        )
    model_type = json.loads(config_file.read_text()).get("model_type")
    wanted = spec.config_class.model_type
    if model_type == wanted:
        return spec.config_class.from_pretrained(path)
    others = [name for name, other in METHODS.items() if other.config_class.model_type == model_type]
    if others:
        raise ValueError(
            f"--init_from {path} holds a {others[0]} pre-training model (model_type '{model_type}'), not {spec.name}: "
            f"run with --method {others[0]}, or give a {spec.name} model."
        )
    if model_type in _ENCODER_TYPES or (path / "conversion.json").is_file():
        raise ValueError(
            f"--init_from {path} is an encoder export (model_type '{model_type}'): it has no "
            f"{'decoder' if spec.name in ('mae', 'asl', 'tec') else 'heads, teacher or centre'}. --init_from needs the "
            "whole pre-training model: convert a released checkpoint with `ssl-hf convert --from FORMAT CKPT --full`, "
            "or use a run's final/ folder (not its export)."
        )
    raise ValueError(f"--init_from {path}: model_type '{model_type}' is not a {spec.name} pre-training model.")


def load_init_weights(model: SSLPreTrainedModel, init_from: str | Path) -> None:
    """Loads every weight and persistent buffer of DIR into `model` (strictly), then restarts its schedule state.

    Raises:
        ValueError: DIR's weights do not fit `model` (names the missing / unexpected / mismatched tensors).
    """
    loaded, info = type(model).from_pretrained(init_from, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        details = "; ".join(
            f"{k.replace('_', ' ')}: {', '.join(map(str, sorted(v)[:6]))}" for k, v in problems.items()
        )
        raise ValueError(f"--init_from {init_from}: its weights do not fit {type(model).__name__} ({details}).")
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.freeze_fixed_parameters()
    model.restart_schedules()


def config_for_init(spec: MethodSpec, given: PreTrainedConfig | None, init_from: str | Path) -> PreTrainedConfig:
    """DIR's config for a run with `--init_from`; a config passed alongside must not differ from it.

    Raises:
        ValueError: DIR is not `spec`'s pre-training model, or `given` differs from its config (the fields are named).
    """
    saved = read_init_config(spec, init_from)
    if given is None:
        return saved
    ours, theirs = comparable_config(given.to_dict()), comparable_config(saved.to_dict())
    conflicts = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if conflicts:
        shown = ", ".join(f"{k} ({ours.get(k)} here, {theirs.get(k)} in DIR)" for k in conflicts[:8])
        raise ValueError(
            f"--init_from {init_from}: the model config comes from that folder, and the one given differs: {shown}."
        )
    return saved


def comparable_config(config: dict, prefix: str = "") -> dict:
    """Config fields that define the model (flattened `backbone_config.*`), without bookkeeping entries."""
    flat = {}
    for key, value in config.items():
        key = str(key)  # id2label has int keys
        if key.startswith("_") or key in ("transformers_version", "architectures", "dtype", "torch_dtype"):
            continue
        if isinstance(value, dict):
            flat.update(comparable_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
