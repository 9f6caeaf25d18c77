"""Training-step throughput of ssl_hf's MAEForPreTraining vs transformers.ViTMAEForPreTraining.

Same config (ViT-S/4 encoder, MAE decoder 512x8, 32x32 images, batch 64), same fused AdamW and parameter groups, same
masking noise. Steps of the two models alternate in one process (warm-up first, then `--repeats` rounds of `--steps`
steps each); the median step time of each model gives its throughput and their ratio. fp32 and bf16 autocast.

    python benchmarks/speed.py [--batch_size 64] [--repeats 7] [--steps 5] [--threads N]
Writes benchmarks/results/speed.json.
"""

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import ViTMAEForPreTraining

import ssl_hf
from ssl_hf import MAEConfig, MAEForPreTraining, backbone_config
from ssl_hf.training.optim import build_adamw


def build_pair(image_size: int, patch_size: int):
    torch.manual_seed(0)
    ours = MAEForPreTraining(MAEConfig(backbone_config=backbone_config("vit-small", image_size, patch_size)))
    theirs = ViTMAEForPreTraining(ours.config.to_vit_mae_config())
    theirs.load_state_dict({k.replace("backbone.", "vit.", 1): v for k, v in ours.state_dict().items()})
    return ours, theirs


def make_step(model, optimizer, precision: str):
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    is_ours = isinstance(model, MAEForPreTraining)

    def step(pixel_values, noise):
        with autocast:
            out = model(pixel_values, noise=noise) if is_ours else model(pixel_values=pixel_values, noise=noise)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.item()

    return step


def measure(precision: str, args) -> dict:
    ours, theirs = build_pair(args.image_size, args.patch_size)
    device = torch.device("cpu")
    L = (args.image_size // args.patch_size) ** 2
    batches = [
        (torch.randn(args.batch_size, 3, args.image_size, args.image_size), torch.rand(args.batch_size, L))
        for _ in range(4)
    ]
    steps = {}
    for name, model in (("ssl_hf", ours), ("transformers", theirs)):
        model.train()
        optimizer = build_adamw(model, 1e-4, 0.05, (0.9, 0.95), device)
        steps[name] = make_step(model, optimizer, precision)
    for name in steps:  # warm-up (allocator, autocast caches, fused kernels)
        for i in range(args.warmup):
            steps[name](*batches[i % len(batches)])
    times = {name: [] for name in steps}
    for r in range(args.repeats):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))  # alternate who goes first
        for name in order:
            start = time.perf_counter()
            for i in range(args.steps):
                steps[name](*batches[i % len(batches)])
            times[name].append((time.perf_counter() - start) / args.steps)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "precision": precision,
        "step_seconds_median": medians,
        "step_seconds_all": times,
        "images_per_second": {name: args.batch_size / t for name, t in medians.items()},
        "ratio_ssl_hf_over_transformers": medians["transformers"] / medians["ssl_hf"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--patch_size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for precision in args.precisions.split(","):
        result = measure(precision, args)
        results.append(result)
        ips = result["images_per_second"]
        print(
            f"{precision:>5}: ssl_hf {ips['ssl_hf']:.1f} img/s, transformers {ips['transformers']:.1f} img/s, "
            f"ratio {result['ratio_ssl_hf_over_transformers']:.3f}"
        )
    import transformers

    report = {
        "benchmark": "MAE training step (forward + backward + fused AdamW), ViT-S/4 + decoder 512x8",
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "ssl_hf": ssl_hf.__version__,
        },
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
