"""Shared fixtures: a tiny MAE config, an isolated built-in dataset cache, and Accelerate state resets."""

import os
import tempfile
from pathlib import Path


# Set before huggingface_hub / datasets are imported (they read these at import time). Tests never touch the network,
# and their caches live outside the user's: built-in sets are deterministic, so the cache is reused across runs.
_CACHE = Path(tempfile.gettempdir()) / f"ssl_hf_test_cache_{os.getuid()}"
os.environ.setdefault("SSL_HF_CACHE", str(_CACHE / "ssl_hf"))
os.environ.setdefault("HF_DATASETS_CACHE", str(_CACHE / "datasets"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_accelerate():
    """`AcceleratorState` is a process-wide singleton; reset it so each test builds its own Accelerator."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def tiny_mae_config(**overrides):
    """ViTMAEModelTester-like tiny MAE: 32x32 images, patch 8 (16 patches), width 32, 2 layers, MLP 37 (odd on purpose)."""
    from ssl_hf import MAEConfig, backbone_config

    backbone = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    backbone.update(overrides.pop("backbone", {}))
    fields = dict(
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=24,
    )
    fields.update(overrides)
    return MAEConfig(backbone_config=backbone_config("vit-tiny", 32, 8, **backbone), **fields)


def tiny_asl_config(**overrides):
    """The tiny MAE above plus ASL's defaults (AEE branch, L1 alignment on hidden patches)."""
    from ssl_hf import ASLConfig

    mae = tiny_mae_config()
    fields = {k: v for k, v in mae.to_dict().items() if k.startswith("decoder_")}
    fields.update(overrides)
    return ASLConfig(backbone_config=mae.backbone_config, **fields)


# one tiny config per registered method: tests/models/test_common.py runs every method through the same checks
TINY_CONFIGS = {"mae": tiny_mae_config, "asl": tiny_asl_config}


@pytest.fixture
def tiny_config():
    return tiny_mae_config()


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
