"""Shared fixtures: a tiny MAE config, an isolated built-in dataset cache, and Accelerate state resets."""

import os
import tempfile
from pathlib import Path


# Set before huggingface_hub / datasets are imported (they read these at import time). Tests never touch the network,
# and their caches live outside the user's: built-in sets are deterministic, so the cache is reused across runs.
_CACHE = Path(tempfile.gettempdir()) / f"ssl_hf_test_cache_{os.getuid()}"
os.environ.setdefault("SSL_HF_CACHE", str(_CACHE / "ssl_hf"))
os.environ.setdefault("HF_DATASETS_CACHE", str(_CACHE / "datasets"))
os.environ.setdefault("HF_MODULES_CACHE", str(_CACHE / "modules"))  # evaluate copies metric scripts there
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def reset_accelerate():
    """`AcceleratorState` is a process-wide singleton; reset it so the next `pretrain` builds its own Accelerator."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def _reset_accelerate():
    yield
    reset_accelerate()


def tiny_training_args(output_dir, **overrides):
    """`TrainingArguments` of a few-step run on digit-scenes (batch 8, a checkpoint every 3 steps)."""
    from ssl_hf.training import TrainingArguments

    fields = dict(
        dataset="digit-scenes",
        output_dir=str(output_dir),
        max_steps=6,
        batch_size=8,
        save_steps=3,
        learning_rate=1e-3,
        warmup_steps=2,
        seed=0,
    )
    return TrainingArguments(**{**fields, **overrides})


def pretrain_killed_after(step: int, spec, config, args, monkeypatch) -> None:
    """Runs `pretrain` and kills it (KeyboardInterrupt) right after the checkpoint of `step` is written."""
    from ssl_hf.training import loop as loop_module
    from ssl_hf.training import pretrain

    real_save = loop_module.save_checkpoint

    def save_then_die(accelerator, out, state, keep):
        path = real_save(accelerator, out, state, keep)
        if state["step"] == step:
            raise KeyboardInterrupt(f"simulated kill after step {step}")
        return path

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(spec, config, args)
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    reset_accelerate()


# the same tiny MAE as `ssl-hf pretrain` flags / YAML keys (one encoder layer)
TINY_MODEL = {
    "backbone": "vit-tiny",
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "decoder_hidden_size": 16,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 2,
    "decoder_intermediate_size": 24,
    "mask_ratio": 0.5,
}


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


def tiny_base_model_dir() -> Path:
    """A seeded tiny `ViTModel` (the tiny MAE's backbone) saved once on disk: the base model of the tiny TEC."""
    from transformers import ViTModel

    path = _CACHE / "tiny_tec_base_v1"
    if not (path / "config.json").is_file():
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        torch.manual_seed(1234)
        ViTModel(tiny_mae_config().backbone_config, add_pooling_layer=False).save_pretrained(tmp)
        try:
            os.rename(tmp, path)  # atomic; a parallel worker may have won the race
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return path


def tiny_tec_config(**overrides):
    """The tiny MAE's encoder and decoder sizes with TEC's targets from a tiny ViT base (groups of 1 block, top-3)."""
    from ssl_hf import TECConfig

    mae = tiny_mae_config()
    fields = {k: v for k, v in mae.to_dict().items() if k.startswith("decoder_")}
    fields.update(base_model=str(tiny_base_model_dir()), adapter_group_size=1, attention_topk=3)
    fields.update(overrides)
    return TECConfig(backbone_config=mae.backbone_config, **fields)


def tiny_resnet_config(preset: str = "resnet-18", **overrides):
    """A 4-stage basic-block ResNet with widths 8-16-16-32 (`backbone_config(preset, ...)` overrides; the preset
    `resnet-18-small-stem` gives the 3x3 stride-1 stem without max-pool)."""
    from ssl_hf import backbone_config

    fields = dict(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1])
    fields.update(overrides)
    return backbone_config(preset, **fields)


def tiny_byol_config(**overrides):
    """BYOL on the tiny ResNet at 32x32 with heads 64 -> 16."""
    from ssl_hf import BYOLConfig

    fields = dict(backbone_config=tiny_resnet_config(), image_size=32, proj_hidden_dim=64, proj_out_dim=16)
    fields.update(pred_hidden_dim=64, **overrides)
    return BYOLConfig(**fields)


def tiny_msbreg_config(**overrides):
    """MSBReg (K = 4, both regularisers on) with the tiny BYOL's backbone and heads."""
    from ssl_hf import MSBRegConfig

    fields = dict(backbone_config=tiny_resnet_config(), image_size=32, proj_hidden_dim=64, proj_out_dim=16)
    fields.update(pred_hidden_dim=64, **overrides)
    return MSBRegConfig(**fields)


def _tiny_self_distillation_fields(overrides: dict) -> dict:
    from ssl_hf import backbone_config

    backbone = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    backbone.update(overrides.pop("backbone", {}))
    fields = dict(
        backbone_config=backbone_config("vit-tiny", 32, 8, **backbone),
        out_dim=64,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        num_local_crops=2,
        local_crop_size=16,
        freeze_last_layer_fraction=0.0,  # every parameter learns from step 0 (tested separately)
    )
    fields.update(overrides)
    return fields


def tiny_dino_config(**overrides):
    """DINO on the tiny MAE's ViT (32x32, patch 8), heads 32 -> 16 -> 64, 2 global + 2 local 16-px crops."""
    from ssl_hf import DINOConfig

    return DINOConfig(**_tiny_self_distillation_fields(overrides))


def tiny_dino_resnet_config(**overrides):
    """The tiny DINO's heads and crops on the tiny ResNet with the small stem: 32-px global and 12-px local crops."""
    from ssl_hf import DINOConfig

    backbone = tiny_resnet_config("resnet-18-small-stem")
    fields = {"backbone_config": backbone, "image_size": 32, "local_crop_size": 12, **overrides}
    return DINOConfig(**_tiny_self_distillation_fields(fields))


def perturb_student(model, scale=0.05, seed=1):
    """Moves every student parameter of a DINO-style model away from the teacher (which starts as an exact copy)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in model._student_modules:
            for p in getattr(model, name).parameters():
                p.add_(scale * torch.randn(p.shape, generator=gen))


def tiny_selfpatch_config(**overrides):
    """SelfPatch with the tiny DINO's backbone, crops and heads; patch head 32 prototypes, k = 4."""
    from ssl_hf import SelfPatchConfig

    return SelfPatchConfig(**_tiny_self_distillation_fields({"patch_out_dim": 32, **overrides}))


# one tiny config per registered method: tests/models/test_common.py runs every method through the same checks
TINY_CONFIGS = {
    "mae": tiny_mae_config,
    "asl": tiny_asl_config,
    "tec": tiny_tec_config,
    "byol": tiny_byol_config,
    "msbreg": tiny_msbreg_config,
    "dino": tiny_dino_config,
    "selfpatch": tiny_selfpatch_config,
}


@pytest.fixture
def no_training(monkeypatch):
    """Replaces the training loop: records what the CLI would train (and keeps a parse bug from starting a run)."""
    import ssl_hf.training

    calls = []

    def fake_pretrain(spec, config, args):
        calls.append((spec, config, args))
        return Path(args.output_dir) / "final"

    monkeypatch.setattr(ssl_hf.training, "pretrain", fake_pretrain)
    return calls


@pytest.fixture
def tiny_config():
    return tiny_mae_config()


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


def write_square_folders(root: Path, levels: dict[str, int], per_class: int, noise: int) -> Path:
    """Labelled imagefolder `root/{train,test}/<class>/<i>.png` of 32x32 RGB squares at a grey `level` +- `noise`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, level in levels.items():
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(level + rng.integers(-noise, noise + 1, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def run_in_fresh_process(script: str, *args: str, cwd: Path, timeout: int = 180) -> dict:
    """Runs `python -c script args` offline in a fresh interpreter whose working directory is `cwd` (not the repo, so
    nothing of ssl_hf is on the path but the installed package); returns the JSON of its last printed line."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
