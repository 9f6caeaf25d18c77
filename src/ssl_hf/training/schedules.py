"""Schedules as pure functions of the step (no state to checkpoint)."""

import math


def cosine_with_warmup(step: int, max_steps: int, warmup_steps: int, peak: float, final: float = 0.0) -> float:
    """Linear warm-up from 0 to `peak`, then half-cosine to `final` at `max_steps`.

    Args:
        step: Optimiser steps done so far (the value for the next step).
        max_steps: Total optimiser steps.
        warmup_steps: Steps of linear warm-up.
        peak: Value at the end of warm-up.
        final: Value at `max_steps`.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
