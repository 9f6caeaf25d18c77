"""On-disk cache of extracted features (safetensors), so several protocols and later runs reuse one forward pass."""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

from ..data.datasets import ImageSource
from ..data.views import EvalView
from ..published import LOCAL_RECORD


CACHE_VERSION = 1  # bump when the meaning of cached tensors changes


def default_cache_dir() -> Path:
    """`$SSL_HF_CACHE/features` (default `~/.cache/ssl_hf/features`)."""
    return Path(os.environ.get("SSL_HF_CACHE") or Path.home() / ".cache" / "ssl_hf").expanduser() / "features"


def model_fingerprint(
    model_path: str | os.PathLike, random_init: bool = False, seed: int = 0, floor: dict | None = None
) -> dict:
    """What identifies a backbone's weights.

    A local folder: its absolute path and the size and modification time of its config and weight files (a
    re-export invalidates the cache). A Hub id: its name (the caller adds the resolved commit). Random init: the seed,
    the run record the twin is rebuilt from (`training_args.json`) and `floor`, how the twin was built and calibrated.
    """
    path = Path(model_path)
    names = ("config.json", "training_args.json", LOCAL_RECORD) if random_init else ("config.json",)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name in names or p.name.startswith("model."))
        identity = {
            "path": str(path.resolve()),
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        }
    else:
        identity = {"hub_id": str(model_path)}
    if random_init:
        identity["random_init_seed"] = seed
        identity["floor"] = floor
    return identity


def source_key(source: ImageSource, name: str, split: str) -> dict:
    """Identifies a split's content: the `datasets` fingerprint (changes with the data), plus name and split."""
    return {"dataset": name, "split": split, "fingerprint": getattr(source.dataset, "_fingerprint", None)}


def view_key(view: EvalView) -> list:
    """Identifies an evaluation view: its size and normalisation."""
    return [view.image_size, list(view.mean), list(view.std)]


class FeatureCache:
    """Stores named tensors under a hash of everything that determines them.

    Args:
        root: Cache folder; None disables caching (every call computes).
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None

    def path(self, fields: dict) -> Path | None:
        """The file of an entry (None when caching is off, or for data without a fingerprint, e.g. streamed)."""
        if self.root is None or ("fingerprint" in fields and fields["fingerprint"] is None):
            return None
        blob = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
        return self.root / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.safetensors"

    def get_or_compute(self, fields: dict, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """Returns the cached tensors of `fields`, or computes, stores (atomically) and returns them.

        Args:
            fields: JSON-serialisable description of the tensors (model fingerprint, dataset fingerprint, split,
                view, pooling, ...).
            compute: Produces the tensors on a miss.
        """
        path = self.path(fields)
        if path is not None and path.is_file():
            try:
                return load_file(path)
            except Exception:  # a truncated or foreign file: recompute and overwrite
                path.unlink(missing_ok=True)
        tensors = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            metadata = {"fields": json.dumps(fields, sort_keys=True, default=str)}
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
            os.replace(tmp, path)
        return tensors
