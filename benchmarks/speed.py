"""Training-step throughput of ssl_hf methods, each pair measured alternately in one process.

Pairs (fused AdamW with the same parameter groups, the same masking noise; MAE decoder 512x8):
  - ssl_hf `MAEForPreTraining` vs `transformers.ViTMAEForPreTraining` (same weights), ViT-S/4 at 32x32, batch 64;
  - `ASLForPreTraining` (AEE, the default) vs `MAEForPreTraining` (ASL paper Tab. 7: ~1.5x FLOPs), ViT-S/4;
  - `ASLForPreTraining` (DLE) vs `MAEForPreTraining` (paper: ~2x FLOPs), ViT-S/4;
  - ASL (AEE) vs MAE at the paper's ViT-B/16 at 224 (batch 8 on CPU), where the encoder/decoder balance is the
    paper's;
  - MSBReg (K = 4 and K = 8) vs BYOL (K = 2), ResNet-18 at 32 px, batch 64, LARS + EMA update (expected ~K/2);
  - TEC vs MAE, ViT-S/4 and ViT-B/16: the same encoder and batch, each method's own decoder (TEC 2 x 512, MAE
    8 x 512), TEC's base model a same-size ViT (its forward on the full image is part of TEC's step; spec: ~1.5x);
  - SelfPatch vs DINO, ViT-S/4 at 32x32, batch 64, 2 global 32-px + 6 local 16-px crops, the paper heads (2048 hidden,
    256 bottleneck; 4096 image / 1024 patch prototypes, k = 2: the spec's 32x32 setting), AdamW + EMA + centres
    (spec: ~1.4-1.6x).
After a warm-up, the two step functions of a pair alternate for `--repeats` rounds of `--steps` steps (who goes first
alternates too); the median step time of each gives its throughput and the ratio. fp32 and bf16 autocast.

    python benchmarks/speed.py [--pairs mae-vs-transformers,asl-aee-vs-mae,asl-dle-vs-mae] [--precisions fp32,bf16]
Writes benchmarks/results/speed.json (merged with earlier results of other pairs).
"""

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
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
from ssl_hf.training.optim import build_adamw


SMALL = {"backbone": "vit-small", "image_size": 32, "patch_size": 4}  # the setting: ViT-S/4 at 32x32
BASE = {"backbone": "vit-base", "image_size": 224, "patch_size": 16, "batch_size": 8}  # the papers' ViT-B/16


def _mae(setting: dict) -> MAEForPreTraining:
    torch.manual_seed(0)
    bb = backbone_config(setting["backbone"], setting["image_size"], setting["patch_size"])
    return MAEForPreTraining(MAEConfig(backbone_config=bb))


def _asl(setting: dict, augmentation: str) -> ASLForPreTraining:
    torch.manual_seed(0)
    bb = backbone_config(setting["backbone"], setting["image_size"], setting["patch_size"])
    return ASLForPreTraining(ASLConfig(backbone_config=bb, feature_augmentation=augmentation))


def _tec(setting: dict) -> TECForPreTraining:
    """TEC with its paper defaults (decoder 2 x 512) learning from a same-size ViT (random weights: timing only)."""
    torch.manual_seed(0)
    bb = backbone_config(setting["backbone"], setting["image_size"], setting["patch_size"])
    topk = 15 if setting["patch_size"] == 16 else 5  # Tab. 14 / preset tec-vits4-cifar
    return TECForPreTraining(TECConfig(backbone_config=bb, attention_topk=topk), base_model=ViTModel(bb))


RESNET = {"backbone": "resnet-18", "image_size": 32}  # BYOL / MSBReg: ResNet-18 at 32 px (byol_tiny.yaml)


def _byol(setting: dict) -> BYOLForPreTraining:
    torch.manual_seed(0)
    heads = dict(proj_hidden_dim=512, proj_out_dim=128, pred_hidden_dim=512)
    return BYOLForPreTraining(BYOLConfig(backbone_config=backbone_config(setting["backbone"]), image_size=32, **heads))


def _msbreg(setting: dict, views: int) -> MSBRegForPreTraining:
    torch.manual_seed(0)
    bb = backbone_config(setting["backbone"])
    return MSBRegForPreTraining(MSBRegConfig(backbone_config=bb, image_size=setting["image_size"], num_views=views))


MULTICROP = dict(out_dim=4096, num_local_crops=6, local_crop_size=16)  # presets dino/selfpatch-vits4-cifar


def _dino(setting: dict) -> DINOForPreTraining:
    torch.manual_seed(0)
    bb = backbone_config(setting["backbone"], setting["image_size"], setting["patch_size"])
    return DINOForPreTraining(DINOConfig(backbone_config=bb, **MULTICROP))


def _selfpatch(setting: dict) -> SelfPatchForPreTraining:
    torch.manual_seed(0)
    bb = backbone_config(setting["backbone"], setting["image_size"], setting["patch_size"])
    config = SelfPatchConfig(backbone_config=bb, patch_out_dim=1024, num_neighbors_k=2, **MULTICROP)
    return SelfPatchForPreTraining(config)


def _transformers_twin(model: MAEForPreTraining) -> ViTMAEForPreTraining:
    twin = ViTMAEForPreTraining(model.config.to_vit_mae_config())
    twin.load_state_dict({k.replace("backbone.", "vit.", 1): v for k, v in model.state_dict().items()})
    return twin


PAIRS = {
    # name: (setting, label_a, build_a, label_b, build_b); reported ratio = time(b) / time(a) = speed(a) / speed(b)
    "mae-vs-transformers": (SMALL, "ssl_hf MAE", _mae, "transformers ViTMAE", None),
    "asl-aee-vs-mae": (SMALL, "MAE", _mae, "ASL (AEE)", lambda s: _asl(s, "aee")),
    "asl-dle-vs-mae": (SMALL, "MAE", _mae, "ASL (DLE)", lambda s: _asl(s, "dle")),
    "asl-aee-vs-mae-vitb16": (BASE, "MAE", _mae, "ASL (AEE)", lambda s: _asl(s, "aee")),
    "tec-vs-mae": (SMALL, "MAE", _mae, "TEC", _tec),
    "tec-vs-mae-vitb16": (BASE, "MAE", _mae, "TEC", _tec),
    "msbreg-k4-vs-byol": (RESNET, "BYOL (K = 2)", _byol, "MSBReg (K = 4)", lambda s: _msbreg(s, 4)),
    "msbreg-k8-vs-byol": (RESNET, "BYOL (K = 2)", _byol, "MSBReg (K = 8)", lambda s: _msbreg(s, 8)),
    "selfpatch-vs-dino": (SMALL, "DINO", _dino, "SelfPatch", _selfpatch),
}


def build(pair: str) -> dict:
    setting, label_a, build_a, label_b, build_b = PAIRS[pair]
    model_a = build_a(setting)
    model_b = _transformers_twin(model_a) if build_b is None else build_b(setting)
    return {label_a: model_a, label_b: model_b}


def make_step(model, precision: str):
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    k_views = hasattr(model.config, "num_views")  # BYOL / MSBReg: LARS and the EMA update, as in training
    teacher = k_views or hasattr(model.config, "num_local_crops")  # DINO / SelfPatch: EMA teacher and centres
    if k_views:
        optimizer = build_lars(model, 1.0, 1e-5)
    else:
        optimizer = build_adamw(model, 1e-4, 0.05, (0.9, 0.95), torch.device("cpu"))
    model.train()

    def step(batch: dict):
        with autocast:
            out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if teacher:
            model.post_optimizer_step(1, 100)

    return step


def inputs(model, batch_size: int, size: int) -> dict:
    """Forward kwargs: pixels + noise (masked models), `(B, K, 3, S, S)` views (K-view models) or global + local
    crops (multi-crop models)."""
    config = model.config
    if hasattr(config, "num_views"):
        return {"pixel_values": torch.randn(batch_size, config.num_views, 3, size, size)}
    if hasattr(config, "num_local_crops"):
        s = config.local_crop_size
        return {
            "pixel_values": torch.randn(batch_size, 2, 3, size, size),
            "local_pixel_values": torch.randn(batch_size, config.num_local_crops, 3, s, s),
        }
    L = (size // config.backbone_config.patch_size) ** 2
    return {"pixel_values": torch.randn(batch_size, 3, size, size), "noise": torch.rand(batch_size, L)}


def measure(pair: str, precision: str, args) -> dict:
    setting = PAIRS[pair][0]
    size, batch_size = setting["image_size"], setting.get("batch_size", args.batch_size)
    models = build(pair)
    batches = {name: [inputs(model, batch_size, size) for _ in range(4)] for name, model in models.items()}
    steps = {name: make_step(model, precision) for name, model in models.items()}
    for name in steps:  # warm-up: allocator, autocast caches, fused kernels
        for i in range(args.warmup):
            steps[name](batches[name][i % 4])
    times = {name: [] for name in steps}
    for r in range(args.repeats):
        for name in list(steps) if r % 2 == 0 else list(reversed(steps)):
            start = time.perf_counter()
            for i in range(args.steps):
                steps[name](batches[name][i % 4])
            times[name].append((time.perf_counter() - start) / args.steps)
    (a, b), medians = list(steps), {name: statistics.median(t) for name, t in times.items()}
    rounds = [tb / ta for ta, tb in zip(times[a], times[b])]
    return {
        "pair": pair,
        "precision": precision,
        "models": [a, b],
        "step_seconds_median": medians,
        "step_seconds_all": times,
        "setting": {**setting, "batch_size": batch_size},
        "images_per_second": {name: batch_size / t for name, t in medians.items()},
        "ratio": medians[b] / medians[a],
        "ratio_meaning": f"step time of {b} / step time of {a}",
        "ratio_rounds": [min(rounds), max(rounds)],
        "timing": {"warmup": args.warmup, "repeats": args.repeats, "steps": args.steps},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--vitb16_precisions", default="fp32", help="precisions for the (slow) ViT-B/16 pair")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    earlier = json.loads(output.read_text()) if output.is_file() else {}
    previous = earlier.get("results", [])
    timing_keys = ("warmup", "repeats", "steps")
    for r in previous:  # results written before per-result timing was recorded: the file's settings
        r.setdefault("timing", {k: earlier["config"][k] for k in timing_keys})
    results = []
    for pair in args.pairs.split(","):
        if pair not in PAIRS:
            raise SystemExit(f"unknown pair '{pair}'; choose from {', '.join(PAIRS)}")
        for precision in (args.vitb16_precisions if PAIRS[pair][0] is BASE else args.precisions).split(","):
            r = measure(pair, precision, args)
            results.append(r)
            ips = r["images_per_second"]
            a, b = r["models"]
            print(
                f"{pair} {precision}: {a} {ips[a]:.1f} img/s, {b} {ips[b]:.1f} img/s, {r['ratio_meaning']} = {r['ratio']:.3f}"
            )
    done = {(r["pair"], r["precision"]) for r in results}
    kept = [r for r in previous if "pair" in r and (r["pair"], r["precision"]) not in done]
    import transformers

    report = {
        "benchmark": "training step (forward + backward + fused AdamW), MAE decoder 512x8; settings per result",
        # the header settings of the README table (each result records its own timing too)
        "config": earlier.get("config")
        or {k: v for k, v in vars(args).items() if k not in ("output", "pairs", "precisions")},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "ssl_hf": ssl_hf.__version__,
        },
        "results": kept + results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
