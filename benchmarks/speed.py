"""Training-step throughput and peak memory of ssl_hf methods, each method timed alternately with its base and with
`transformers.ViTMAEForPreTraining` in one process.

A training step is forward + backward + optimiser step: fused AdamW (MAE decoder 512x8; TEC: its own 2 x 512 decoder
and the frozen base model's forward on the full image), LARS + EMA update (BYOL / MSBReg), AdamW + EMA teacher +
centres (DINO / SelfPatch, 2 global + 6 local crops). Default groups (`--groups`):
  - `mae`: MAE (base), ASL (AEE), TEC, transformers ViTMAE - ViT-S/4 at 32x32, batch 64;
  - `byol`: BYOL (base), MSBReg (K = 4) - ResNet-18 small stem at 32 px, batch 64; ViTMAE at ViT-S/4 @32, batch 64;
  - `dino`: DINO (base), SelfPatch - ViT-S/4 at 32x32, batch 64, 2 global 32-px + 6 local 16-px crops; ViTMAE.
Extra groups by name: `asl-dle` (ASL with DLE), `msbreg-k8`, `byol-standard-stem` (ResNet-18 with its 224-px stem,
as in examples/configs/byol_tiny.yaml) and `mae-vitb16` (MAE, ASL, TEC, ViTMAE at ViT-B/16 @224, batch 8).

Timing: every model of a group gets `--warmup` steps, then `--repeats` rounds; in each round the models run one after
the other (the order rotates every round), each for as many steps as fill `--round_seconds` (at least one). The median
per-step time over the rounds gives images/s and the ratios to the group's base and to ViTMAE; per-round ratios give
their spread. fp32 and bf16 autocast. Peak memory is measured in a fresh process per model and precision (on CPU the
increase of the peak RSS during two training steps, on CUDA `torch.cuda.max_memory_allocated`).

On CPU the processes apply the allocator setting that ssl_hf's training loop applies by default
(`--cpu_keep_freed_memory`, `ssl_hf.training.memory.keep_freed_cpu_memory`), so the numbers are those of a training
run; `--no-keep_freed_memory` measures glibc's default allocator instead (large blocks mmap'd and page-faulted on every
step).

    python benchmarks/speed.py [--groups mae,byol,dino] [--precisions fp32,bf16] [--repeats 5] [--output PATH]
Writes benchmarks/results/speed.json (results of groups not re-run are kept).
"""

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
import transformers
from transformers import ViTMAEForPreTraining, ViTModel

import ssl_hf
from ssl_hf import (
    ASLConfig,
    ASLForPreTraining,
    BYOLConfig,
    BYOLForPreTraining,
    DINOConfig,
    DINOForPreTraining,
    MAEConfig,
    MAEForPreTraining,
    MSBRegConfig,
    MSBRegForPreTraining,
    SelfPatchConfig,
    SelfPatchForPreTraining,
    TECConfig,
    TECForPreTraining,
    backbone_config,
)
from ssl_hf.training.lars import build_lars
from ssl_hf.training.memory import keep_freed_cpu_memory
from ssl_hf.training.optim import build_adamw


OUTPUT = Path(__file__).parent / "results" / "speed.json"
BENCHMARK = (
    "training step (forward + backward + optimiser step): fused AdamW, MAE decoder 512x8 (TEC: its own 2x512 decoder "
    "and the frozen base model's forward); BYOL/MSBReg: LARS + EMA update; DINO/SelfPatch: AdamW + EMA teacher + "
    "centre update, 2 global + 6 local crops"
)
MEMORY_STEPS = 2  # training steps of the memory probe: the second one has the optimiser state allocated
REFERENCE = "transformers ViTMAE"

# Settings are JSON-serialisable (the memory probe gets them on its command line). `backbone_overrides` and
# `config_overrides` (optional) change fields of the backbone / method config, e.g. for tiny test models.
ALLOCATOR_ENV = ("GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "OMP_NUM_THREADS")
SMALL = {"backbone": "vit-small", "image_size": 32, "patch_size": 4, "batch_size": 64}  # the ViT-S/4 @32
BASE = {"backbone": "vit-base", "image_size": 224, "patch_size": 16, "batch_size": 8}  # the papers' ViT-B/16
RESNET = {"backbone": "resnet-18-small-stem", "image_size": 32, "batch_size": 64}  # 3x3 stride-1 stem, no max-pool
RESNET_STANDARD = {"backbone": "resnet-18", "image_size": 32, "batch_size": 64}  # examples/configs/byol_tiny.yaml
MULTICROP = {**SMALL, "note": "2 global 32-px + 6 local 16-px crops"}
MULTICROP_HEADS = dict(out_dim=4096, num_local_crops=6, local_crop_size=16)  # presets dino/selfpatch-vits4-cifar


def _vit(setting: dict):
    return backbone_config(
        setting["backbone"], setting["image_size"], setting["patch_size"], **setting.get("backbone_overrides", {})
    )


def _mae(setting: dict) -> MAEForPreTraining:
    return MAEForPreTraining(MAEConfig(backbone_config=_vit(setting), **setting.get("config_overrides", {})))


def _vitmae(setting: dict) -> ViTMAEForPreTraining:
    """`transformers.ViTMAEForPreTraining` from the ssl_hf MAE config of the same setting (the same weights)."""
    mae = _mae(setting)
    twin = ViTMAEForPreTraining(mae.config.to_vit_mae_config())
    twin.load_state_dict({k.replace("backbone.", "vit.", 1): v for k, v in mae.state_dict().items()})
    return twin


def _asl(setting: dict, augmentation: str) -> ASLForPreTraining:
    config = ASLConfig(
        backbone_config=_vit(setting), feature_augmentation=augmentation, **setting.get("config_overrides", {})
    )
    return ASLForPreTraining(config)


def _tec(setting: dict) -> TECForPreTraining:
    """TEC with its paper defaults (decoder 2 x 512) learning from a same-size ViT (random weights: timing only)."""
    bb = _vit(setting)
    fields = {"attention_topk": 15 if setting["patch_size"] == 16 else 5}  # Tab. 14 / preset tec-vits4-cifar
    fields.update(setting.get("config_overrides", {}))
    return TECForPreTraining(TECConfig(backbone_config=bb, **fields), base_model=ViTModel(bb))


def _byol(setting: dict) -> BYOLForPreTraining:
    fields = dict(proj_hidden_dim=512, proj_out_dim=128, pred_hidden_dim=512)  # the ResNet-18 heads of byol_tiny
    fields.update(setting.get("config_overrides", {}))
    bb = backbone_config(setting["backbone"], **setting.get("backbone_overrides", {}))
    return BYOLForPreTraining(BYOLConfig(backbone_config=bb, image_size=setting["image_size"], **fields))


def _msbreg(setting: dict, views: int) -> MSBRegForPreTraining:
    bb = backbone_config(setting["backbone"], **setting.get("backbone_overrides", {}))
    config = MSBRegConfig(
        backbone_config=bb, image_size=setting["image_size"], num_views=views, **setting.get("config_overrides", {})
    )
    return MSBRegForPreTraining(config)


def _dino(setting: dict) -> DINOForPreTraining:
    fields = {**MULTICROP_HEADS, **setting.get("config_overrides", {})}
    return DINOForPreTraining(DINOConfig(backbone_config=_vit(setting), **fields))


def _selfpatch(setting: dict) -> SelfPatchForPreTraining:
    """SelfPatch with the paper heads (2048 hidden, 256 bottleneck; 1024 patch prototypes, k = 2)."""
    fields = {**MULTICROP_HEADS, "patch_out_dim": 1024, "num_neighbors_k": 2, **setting.get("config_overrides", {})}
    return SelfPatchForPreTraining(SelfPatchConfig(backbone_config=_vit(setting), **fields))


BUILDERS: dict[str, Callable[[dict], torch.nn.Module]] = {
    "mae": _mae,
    "vitmae": _vitmae,
    "asl-aee": partial(_asl, augmentation="aee"),
    "asl-dle": partial(_asl, augmentation="dle"),
    "tec": _tec,
    "byol": _byol,
    "msbreg-k4": partial(_msbreg, views=4),
    "msbreg-k8": partial(_msbreg, views=8),
    "dino": _dino,
    "selfpatch": _selfpatch,
}


@dataclass(frozen=True)
class Entry:
    """One model of a group.

    Args:
        label: Its name in the results (unique in the group).
        builder: Key of `BUILDERS`.
        setting: Backbone, input size, batch size (and optional overrides); JSON-serialisable.
        target: Upper bound of its step time / the base's step time (the issue's targets), if any.
        target_source: Where the target comes from.
    """

    label: str
    builder: str
    setting: dict
    target: float | None = None
    target_source: str = ""


@dataclass(frozen=True)
class Group:
    """Models timed alternately in one process; the first is the base of the ratios, `REFERENCE` the ViTMAE one."""

    name: str
    entries: tuple[Entry, ...]

    @property
    def base(self) -> str:
        return self.entries[0].label


def _reference(setting: dict = SMALL) -> Entry:
    return Entry(REFERENCE, "vitmae", setting)


GROUPS = {
    "mae": Group(
        "mae",
        (
            Entry("MAE", "mae", SMALL),
            Entry("ASL (AEE)", "asl-aee", SMALL, 1.5, "issue target (ASL paper Tab. 7: ~1.5x FLOPs)"),
            Entry("TEC", "tec", SMALL, 1.8, "issue target"),
            _reference(),
        ),
    ),
    "byol": Group(
        "byol",
        (
            Entry("BYOL", "byol", RESNET),
            Entry("MSBReg (K = 4)", "msbreg-k4", RESNET, 2.2, "issue target (~K/2 views)"),
            _reference(),
        ),
    ),
    "dino": Group(
        "dino",
        (
            Entry("DINO", "dino", MULTICROP),
            Entry("SelfPatch", "selfpatch", MULTICROP, 1.6, "issue target (spec estimate 1.4-1.6x)"),
            _reference(),
        ),
    ),
    # extras, by name only
    "asl-dle": Group(
        "asl-dle", (Entry("MAE", "mae", SMALL), Entry("ASL (DLE)", "asl-dle", SMALL), _reference())
    ),  # paper: ~2x FLOPs
    "msbreg-k8": Group(
        "msbreg-k8", (Entry("BYOL", "byol", RESNET), Entry("MSBReg (K = 8)", "msbreg-k8", RESNET), _reference())
    ),
    "byol-standard-stem": Group(
        "byol-standard-stem",
        (
            Entry("BYOL", "byol", RESNET_STANDARD),
            Entry("MSBReg (K = 4)", "msbreg-k4", RESNET_STANDARD),
            _reference(),
        ),
    ),
    "mae-vitb16": Group(
        "mae-vitb16",
        (
            Entry("MAE", "mae", BASE),
            Entry("ASL (AEE)", "asl-aee", BASE),
            Entry("TEC", "tec", BASE),
            _reference(BASE),
        ),
    ),
}
DEFAULT_GROUPS = ("mae", "byol", "dino")


def cpu_name() -> str:
    """The CPU model (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build(entry: Entry, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights in the timing and the memory processes
    return BUILDERS[entry.builder](entry.setting).to(device)


def inputs(model: torch.nn.Module, setting: dict, device: torch.device) -> dict:
    """Forward kwargs: pixels + noise (masked models), `(B, K, 3, S, S)` views (K-view models) or global + local
    crops (multi-crop models)."""
    config, batch_size, size = model.config, setting["batch_size"], setting["image_size"]
    if hasattr(config, "num_views"):
        return {"pixel_values": torch.randn(batch_size, config.num_views, 3, size, size, device=device)}
    if hasattr(config, "num_local_crops"):
        s = config.local_crop_size
        return {
            "pixel_values": torch.randn(batch_size, 2, 3, size, size, device=device),
            "local_pixel_values": torch.randn(batch_size, config.num_local_crops, 3, s, s, device=device),
        }
    patch = getattr(config, "backbone_config", config).patch_size  # ssl_hf MAE-style or transformers ViTMAEConfig
    tokens = (size // patch) ** 2
    return {
        "pixel_values": torch.randn(batch_size, 3, size, size, device=device),
        "noise": torch.rand(batch_size, tokens, device=device),
    }


def make_step(
    model: torch.nn.Module,
    precision: str,
    device: torch.device,
    region: Callable[[str], AbstractContextManager] = lambda name: nullcontext(),
) -> Callable[[dict], None]:
    """The training step of `model`: the optimiser and post-step updates its method uses in training.

    Args:
        model: A model from `build`.
        precision: `fp32` or `bf16` (autocast on the model's device).
        device: The model's device.
        region: Context manager factory wrapped around each phase (`forward`, `backward`, `optimizer_step`,
            `post_optimizer_step`), e.g. `torch.profiler.record_function`.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision '{precision}' (fp32 or bf16)")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    k_views = hasattr(model.config, "num_views")  # BYOL / MSBReg: LARS and the EMA update, as in training
    teacher = k_views or hasattr(model.config, "num_local_crops")  # DINO / SelfPatch: EMA teacher and centres
    if k_views:
        optimizer = build_lars(model, 1.0, 1e-5)
    else:
        optimizer = build_adamw(model, 1e-4, 0.05, (0.9, 0.95), device)
    model.train()

    def step(batch: dict) -> None:
        with region("forward"), autocast:
            out = model(**batch)
        with region("backward"):
            out.loss.backward()
        with region("optimizer_step"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if teacher:
            with region("post_optimizer_step"):
                model.post_optimizer_step(1, 100)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _range(values: list[float]) -> list[float]:
    return [min(values), max(values)]


def time_group(
    group: Group,
    precision: str,
    device: torch.device,
    warmup: int = 1,
    repeats: int = 4,
    round_seconds: float = 1.5,
    log: Callable[[str], None] = print,
) -> dict:
    """Times the models of `group` alternately in this process.

    Returns:
        Per model (by label): `step_seconds_median`, `step_seconds_all` (per round), `steps_per_round`,
        `images_per_second`, `ratio_to_base` / `ratio_to_vitmae` (median step time / the other's; `None` without a
        ViTMAE entry) and their per-round ranges `ratio_to_base_rounds` / `ratio_to_vitmae_rounds`.
    """
    tag = f"[{group.name} {precision}]"
    models, steps, batches, estimate = {}, {}, {}, {}
    for entry in group.entries:
        log(f"{tag} building {entry.label}")
        models[entry.label] = model = build(entry, device)
        batches[entry.label] = [inputs(model, entry.setting, device) for _ in range(2)]
        steps[entry.label] = make_step(model, precision, device)
    labels = list(models)
    for label in labels:  # warm-up: allocator, autocast caches, fused kernels, lazily built buffers
        for i in range(warmup):
            _sync(device)
            start = time.perf_counter()
            steps[label](batches[label][i % 2])
            _sync(device)
            estimate[label] = min(estimate.get(label, math.inf), time.perf_counter() - start)
        log(f"{tag} warm-up {label}: {estimate.get(label, math.nan):.3f} s/step")
    if estimate:
        expected = repeats * sum(max(t, round_seconds) for t in estimate.values())
        log(f"{tag} timing {repeats} rounds, about {expected:.0f} s")
    times = {label: [] for label in labels}
    counts = {label: [] for label in labels}
    for r in range(repeats):
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:  # rotate who goes first (and next to whom)
            # steps for >= round_seconds, from the fastest step seen so far (in the first round: the warm-up's)
            n = max(1, math.ceil(round_seconds / estimate[label])) if label in estimate else 1
            _sync(device)
            start = time.perf_counter()
            for i in range(n):
                steps[label](batches[label][i % 2])
            _sync(device)
            per_step = (time.perf_counter() - start) / n
            times[label].append(per_step)
            counts[label].append(n)
            estimate[label] = min(estimate.get(label, math.inf), per_step)
        log(
            f"{tag} round {r + 1}/{repeats}: "
            + ", ".join(f"{k} {times[k][-1]:.3f} s x{counts[k][-1]}" for k in labels)
        )
    medians = {label: statistics.median(t) for label, t in times.items()}
    settings = {entry.label: entry.setting for entry in group.entries}
    out = {}
    for label in labels:
        row = {
            "setting": settings[label],
            "step_seconds_median": medians[label],
            "step_seconds_all": times[label],
            "steps_per_round": counts[label],
            "images_per_second": settings[label]["batch_size"] / medians[label],
        }
        for key, other in (("ratio_to_base", group.base), ("ratio_to_vitmae", REFERENCE)):
            if other in times:
                row[key] = medians[label] / medians[other]
                row[f"{key}_rounds"] = _range([a / b for a, b in zip(times[label], times[other])])
            else:
                row[key] = row[f"{key}_rounds"] = None
        out[label] = row
    del models, steps, batches
    gc.collect()
    return out


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Resets the process's peak RSS (`VmHWM`; Linux >= 4.0). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kib("VmHWM") >= 0
    except (OSError, KeyError):
        return False


def memory_probe(entry: Entry, precision: str, device: torch.device) -> dict:
    """Peak memory of `MEMORY_STEPS` training steps of `entry` in this (fresh) process.

    CUDA: `torch.cuda.max_memory_allocated` over the steps (weights, gradients, optimiser state and activations).
    CPU: the increase of the peak resident set size over the RSS before the steps (gradients, optimiser state,
    activations and allocator caches; the weights and inputs are already resident). The peak is reset through
    `/proc/self/clear_refs` where possible: `ru_maxrss` of a spawned child starts at its parent's peak on Linux, so it
    is only the fallback.
    """
    model = build(entry, device)
    batch = inputs(model, entry.setting, device)
    step = make_step(model, precision, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(MEMORY_STEPS):
            step(batch)
        torch.cuda.synchronize(device)
        return {"peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20, "source": "max_memory_allocated"}
    if _reset_peak_rss():
        before = _proc_status_kib("VmRSS")
        for _ in range(MEMORY_STEPS):
            step(batch)
        increase_kib, source = _proc_status_kib("VmHWM") - before, "VmHWM - VmRSS"
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(MEMORY_STEPS):
            step(batch)
        increase_kib, source = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, "ru_maxrss"
        if sys.platform == "darwin":  # bytes there, KiB on Linux
            increase_kib /= 1024
    return {"peak_memory_mib": max(increase_kib, 0) / 1024, "source": source}


def memory_metric(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak allocated CUDA memory during {MEMORY_STEPS} training steps (fresh process)"
    return f"peak RSS increase during {MEMORY_STEPS} training steps (CPU, fresh process)"


def measure_memory(entry: Entry, precision: str, device: torch.device, threads: int, keep_freed: bool = False) -> dict:
    """Runs `memory_probe` in a fresh Python process (its own allocator and peak) and returns its result."""
    spec = {"label": entry.label, "builder": entry.builder, "setting": entry.setting, "precision": precision}
    command = [sys.executable, __file__, "--_memory_probe", json.dumps(spec), "--threads", str(threads)]
    command += ["--device", device.type, "--keep_freed_memory" if keep_freed else "--no-keep_freed_memory"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {entry.label} ({precision}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_group(
    group: Group,
    precision: str,
    device: torch.device,
    threads: int,
    warmup: int = 1,
    repeats: int = 4,
    round_seconds: float = 1.5,
    memory: bool = True,
    memory_cache: dict | None = None,
    log: Callable[[str], None] = print,
    keep_freed: bool = False,
) -> dict:
    """One `results` entry of speed.json: the timings of `time_group`, peak memory and the targets."""
    start = time.perf_counter()
    memory_cache = {} if memory_cache is None else memory_cache
    peaks, sources = {}, set()
    for entry in group.entries if memory else ():  # before building the timed models: less memory in use
        key = (entry.builder, json.dumps(entry.setting, sort_keys=True), precision)
        if key not in memory_cache:  # e.g. ViTMAE at the same setting in several groups
            t = time.perf_counter()
            memory_cache[key] = measure_memory(entry, precision, device, threads, keep_freed)
            log(
                f"[{group.name} {precision}] memory {entry.label}: {memory_cache[key]['peak_memory_mib']:.0f} MiB "
                f"({time.perf_counter() - t:.0f} s)"
            )
        peaks[entry.label] = memory_cache[key]["peak_memory_mib"]
        sources.add(memory_cache[key]["source"])
    models = time_group(group, precision, device, warmup, repeats, round_seconds, log)
    for label, row in models.items():
        row["peak_memory_mib"] = peaks.get(label)
    targets = []
    for entry in group.entries:
        if entry.target is not None:
            value = models[entry.label]["ratio_to_base"]
            targets.append(
                {
                    "model": entry.label,
                    "ratio": "ratio_to_base",
                    "meaning": f"step time of {entry.label} / step time of {group.base}",
                    "max": entry.target,
                    "value": value,
                    "meets_target": value <= entry.target,
                    "source": entry.target_source,
                }
            )
    return {
        "group": group.name,
        "precision": precision,
        "device": device.type,
        "threads": threads,
        "base": group.base,
        "reference": REFERENCE if REFERENCE in models else None,
        "timing": {"warmup": warmup, "repeats": repeats, "round_seconds": round_seconds},
        "memory_metric": memory_metric(device) if memory else None,
        "memory_source": ", ".join(sorted(sources)) or None,
        "models": models,
        "targets": targets,
        "wall_seconds": time.perf_counter() - start,
    }


def _is_current(result: dict) -> bool:
    return "group" in result and isinstance(result.get("models"), dict)


def write_report(output: Path, results: list[dict], header: dict) -> None:
    """Writes `header` + `results` to `output`, keeping earlier results of (group, precision) pairs not re-run."""
    earlier = json.loads(output.read_text()).get("results", []) if output.is_file() else []
    if any(not _is_current(r) for r in earlier):
        print(f"dropping {sum(not _is_current(r) for r in earlier)} results of the earlier pairwise schema")
    done = {(r["group"], r["precision"]) for r in results}
    kept = [r for r in earlier if _is_current(r) and (r["group"], r["precision"]) not in done]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({**header, "results": kept + results}, indent=2) + "\n")


def _probe_main(spec: str, device: str, keep_freed: bool) -> None:
    spec = json.loads(spec)
    entry = Entry(spec["label"], spec["builder"], spec["setting"])
    result = memory_probe(entry, spec["precision"], torch.device(device))
    print(json.dumps({**result, "keep_freed_memory": keep_freed}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", default=",".join(DEFAULT_GROUPS), help=f"any of {', '.join(GROUPS)}")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps per model")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed rounds (median over them; of an even count, the mean of the middle two)",
    )
    parser.add_argument("--round_seconds", type=float, default=1.5, help="minimum time of a model's share of a round")
    parser.add_argument("--batch_size", type=int, default=None, help="override every setting's batch (smoke tests)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True, help="measure peak memory")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--output", default=str(OUTPUT))
    parser.add_argument(
        "--keep_freed_memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on CPU, the training loop's default allocator setting (--cpu_keep_freed_memory)",
    )
    parser.add_argument("--_memory_probe", default=None, help=argparse.SUPPRESS)  # JSON spec: one probe, then exit
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else pick_device()
    keep_freed = device.type == "cpu" and args.keep_freed_memory and keep_freed_cpu_memory()
    if args._memory_probe is not None:
        _probe_main(args._memory_probe, device.type, keep_freed)
        return
    unknown = [g for g in args.groups.split(",") if g not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    groups = [GROUPS[g] for g in args.groups.split(",")]
    if args.batch_size is not None:
        groups = [
            Group(g.name, tuple(replace(e, setting={**e.setting, "batch_size": args.batch_size}) for e in g.entries))
            for g in groups
        ]
    start, results, memory_cache = time.perf_counter(), [], {}
    for group in groups:
        for precision in args.precisions.split(","):
            r = run_group(
                group,
                precision,
                device,
                args.threads,
                args.warmup,
                args.repeats,
                args.round_seconds,
                args.memory,
                memory_cache,
                keep_freed=keep_freed,
            )
            results.append(r)
            for label, m in r["models"].items():
                ratios = f"x{m['ratio_to_base']:.3f} base" + (
                    f", x{m['ratio_to_vitmae']:.3f} ViTMAE" if m["ratio_to_vitmae"] is not None else ""
                )
                mem = f", {m['peak_memory_mib']:.0f} MiB" if m["peak_memory_mib"] is not None else ""
                print(f"{group.name} {precision}: {label} {m['images_per_second']:.1f} img/s, {ratios}{mem}")
            for t in r["targets"]:
                verdict = "meets" if t["meets_target"] else "MISSES"
                print(f"{group.name} {precision}: {t['meaning']} = {t['value']:.3f} {verdict} target <= {t['max']}")
    header = {
        "benchmark": BENCHMARK,
        "method": (
            "models of a group (a method, its base, transformers ViTMAEForPreTraining) alternate round-robin in one "
            "process, order rotating per round, after warm-up; each round runs each model for >= round_seconds "
            "(at least one step); median per-step time over the rounds; ratios are step-time ratios"
        ),
        "memory_metric": memory_metric(device) if args.memory else None,
        "machine": {
            "cpu": cpu_name(),
            "platform": platform.platform(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": args.threads,
        },
        # the allocator settings change CPU step times (large tensors are mmap'd and page-faulted every step)
        "environment": {k: v for k, v in os.environ.items() if k in ALLOCATOR_ENV},
        "cpu_keep_freed_memory": keep_freed,  # the training loop's allocator setting applied in every process
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "ssl_hf": ssl_hf.__version__,
        },
        "timing": {"warmup": args.warmup, "repeats": args.repeats, "round_seconds": args.round_seconds},
        "wall_seconds": time.perf_counter() - start,
    }
    output = Path(args.output)
    write_report(output, results, header)
    print(f"wrote {output} ({header['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
