"""Shared fixtures: a tiny MAE config, an isolated built-in dataset cache, and Accelerate state resets."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _builtin_cache(tmp_path_factory):
    """Built-in datasets are cached per test session (each xdist worker builds its own in ~3 s)."""
    os.environ.setdefault("SSL_HF_CACHE", str(tmp_path_factory.getbasetemp() / "ssl_hf_cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


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
        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=24
    )
    fields.update(overrides)
    return MAEConfig(backbone_config=backbone_config("vit-tiny", 32, 8, **backbone), **fields)


@pytest.fixture
def tiny_config():
    return tiny_mae_config()


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
