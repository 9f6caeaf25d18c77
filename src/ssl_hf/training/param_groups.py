"""Parameter groups for weight decay and learning-rate scales, shared by AdamW (`optim.py`) and LARS (`lars.py`)."""

from torch import nn


_NO_DECAY_NAMES = ("cls_token", "mask_token", "position_embedding", "pos_embed", "register_tokens")  # substrings


def param_groups(model: nn.Module, weight_decay: float, lr_scales: dict[str, float] | None = None) -> list[dict]:
    """Decayed weights (>= 2-D) and the rest (biases, norms, tokens, position tables), split by learning-rate scale.

    Each group carries `decay` (whether the weight-decay schedule applies to it) and `lr_scale` (the factor on the
    scheduled learning rate). The first two groups are the unscaled decayed and non-decayed ones, so a model without
    scales gets exactly those two. Frozen parameters are left out.

    Args:
        model: The module to optimise.
        weight_decay: Decay of the decayed groups.
        lr_scales: Parameter-name prefix -> learning-rate factor (e.g. `{"predictor.": 10.0}`); the first matching
            prefix wins, other parameters get 1.
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and not any(key in name for key in _NO_DECAY_NAMES)
        scale = next((s for prefix, s in (lr_scales or {}).items() if name.startswith(prefix)), 1.0)
        groups.setdefault((float(scale), decay), []).append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "decay": decay, "lr_scale": scale}
        for (scale, decay), params in groups.items()
        if params or scale == 1.0
    ]
