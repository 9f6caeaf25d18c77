"""Parameter groups for weight decay, shared by AdamW (`optim.py`) and LARS (`lars.py`)."""

from torch import nn


_NO_DECAY_NAMES = ("cls_token", "mask_token", "position_embedding", "pos_embed", "register_tokens")  # substrings


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights (>= 2-D) and the rest (biases, norms, tokens, position tables).

    Frozen parameters are left out.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or any(key in name for key in _NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
