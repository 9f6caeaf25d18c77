"""Metrics through the `evaluate` API, offline: the metric modules shipped with ssl_hf load from the package by path.

`evaluate.load("accuracy")` fetches the metric script from the Hugging Face Hub, so it fails offline (and on clusters
without network). The metrics the evaluation protocols need are `evaluate` metric modules inside this package
(`ssl_hf/evaluation/metrics/<name>/<name>.py`) that `load_metric` loads by path; any other name goes to
`evaluate.load` as is (a Hub metric such as `"accuracy"`, a `"user/metric"` id or a local path), which needs the
network unless `evaluate` already has it in its modules cache.

Shipped names take precedence over Hub metrics of the same name: the Hub's own mean IoU (different inputs) is still
reachable as `"evaluate-metric/mean_iou"`.
"""

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import evaluate


METRICS_DIR = Path(__file__).resolve().parent / "metrics"
SHIPPED_METRICS = ("topk_accuracy", "mean_iou")


def shipped_metric_path(name: str) -> Path:
    """Folder of a metric module shipped with ssl_hf (it holds `<name>.py`).

    Raises:
        KeyError: If `name` is not one of `SHIPPED_METRICS`.
    """
    if name not in SHIPPED_METRICS:
        raise KeyError(f"'{name}' is not a metric shipped with ssl_hf ({', '.join(SHIPPED_METRICS)}).")
    return METRICS_DIR / name


def load_metric(name: str, config_name: str | None = None) -> "evaluate.EvaluationModule":
    """Loads an `evaluate` metric: a shipped one by path (works offline), any other name with `evaluate.load`.

    Loaded metrics are cached per `(name, config_name)` and shared: call `compute(...)` with all the inputs, or finish
    every `add_batch(...)` sequence with `compute(...)`, which empties the module's buffer for the next user. Shipped
    metrics keep their buffer in memory (no cache files).

    Args:
        name: `"topk_accuracy"` or `"mean_iou"` (see `SHIPPED_METRICS`), else anything `evaluate.load` accepts (a Hub
            metric name or id, a local metric folder or script).
        config_name: Configuration of the metric (e.g. `"counts"` for `mean_iou`), None for its default.

    Returns:
        The `evaluate.EvaluationModule`.

    Raises:
        FileNotFoundError: If `name` is neither shipped nor loadable by `evaluate` (offline mode, no network, or no
            such metric); the message says which and lists the shipped metrics.
    """
    return _load(name, config_name)


@functools.cache
def _load(name: str, config_name: str | None) -> "evaluate.EvaluationModule":
    import evaluate  # imported on first use: it adds about half a second to `import ssl_hf.evaluation`

    if name in SHIPPED_METRICS:
        return evaluate.load(str(shipped_metric_path(name)), config_name=config_name, keep_in_memory=True)
    try:
        with _evaluate_offline_like_the_hub():
            return evaluate.load(name, config_name=config_name)
    except (FileNotFoundError, ConnectionError) as err:
        if os.path.isabs(name) or name.startswith(".") or name.count("/") > 1:  # a path: evaluate's error says it
            raise
        if _offline():
            reason = "offline mode is on (HF_HUB_OFFLINE / HF_EVALUATE_OFFLINE), so the Hub cannot be reached"
        else:
            reason = "the Hugging Face Hub has no such metric or could not be reached"
        raise FileNotFoundError(
            f"Metric '{name}' is not shipped with ssl_hf (shipped, usable offline: {', '.join(SHIPPED_METRICS)}) "
            f"and evaluate.load could not get it: {reason}, and it is not in evaluate's modules cache. ({err})"
        ) from err


@contextlib.contextmanager
def _evaluate_offline_like_the_hub() -> Iterator[None]:
    """Makes `evaluate` honour `HF_HUB_OFFLINE` for the duration of the block.

    `evaluate` (0.4.x) reads only its own `HF_EVALUATE_OFFLINE`: with `HF_HUB_OFFLINE=1` alone (what the rest of the
    Hugging Face stack and the test suite use), `evaluate.load("accuracy")` still sends requests to huggingface.co and
    to its S3 download counter before falling back to its modules cache. When huggingface_hub or datasets is offline,
    this sets `evaluate.config.HF_EVALUATE_OFFLINE` (read at call time) so that it goes straight to the cache.
    """
    import evaluate

    saved = evaluate.config.HF_EVALUATE_OFFLINE
    evaluate.config.HF_EVALUATE_OFFLINE = saved or _offline()
    try:
        yield
    finally:
        evaluate.config.HF_EVALUATE_OFFLINE = saved


def _offline() -> bool:
    """Whether the Hub libraries run in offline mode (`HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE`, `HF_EVALUATE_OFFLINE`)."""
    import datasets
    import evaluate
    import huggingface_hub

    flags = (
        huggingface_hub.constants.HF_HUB_OFFLINE,
        getattr(datasets.config, "HF_HUB_OFFLINE", False),
        evaluate.config.HF_EVALUATE_OFFLINE,
    )
    return any(flags) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
