"""Profiles training steps of the models of a speed.py group with `torch.profiler`: where the step time goes.

Each named model of the group (same builders, inputs and step as benchmarks/speed.py) runs `--warmup` steps, then
`--steps` profiled steps. The step's phases (`forward`, `backward`, `optimizer_step`, `post_optimizer_step`: EMA
teacher / centre updates) and the forward of every top-level child module (e.g. `backbone`, `decoder`, `aee`, heads,
teacher modules; TEC's frozen base model as `base_model`) and of their children (e.g. `backbone.encoder`) are
wrapped in `record_function` regions from outside the library (hooks), so the profile splits the step by phase and
the forward by module. Per model it reports the CPU time of each region per step (inclusive of what runs inside it)
and the top operators by self CPU time.

    python benchmarks/profile_step.py --group mae --models "MAE,ASL (AEE)" [--precision fp32] [--steps 2]
Writes benchmarks/results/profile_<group>.json and prints a summary.
"""

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode


sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed


PHASES = ("forward", "backward", "optimizer_step", "post_optimizer_step")
PHASE_PREFIX, MODULE_PREFIX = "phase::", "module::"
TOP_OPS = 15


def profiled_children(model: torch.nn.Module) -> dict[str, list[torch.nn.Module]]:
    """Region name -> modules: the model's top-level children and their children (a method may call e.g.
    `backbone.embeddings` and `backbone.encoder` rather than `backbone`), plus TEC's frozen base model (held outside
    the module tree). The blocks of an `nn.ModuleList` (never called itself) share its name."""
    children = dict(model.named_children())
    base = getattr(model, "_base_targets", None)
    if base is not None and isinstance(getattr(base, "encoder", None), torch.nn.Module):
        children["base_model"] = base.encoder
    out = {}
    for name, child in children.items():
        out[name] = list(child) if isinstance(child, torch.nn.ModuleList) else [child]
        for sub, grandchild in child.named_children():
            out[f"{name}.{sub}"] = list(grandchild) if isinstance(grandchild, torch.nn.ModuleList) else [grandchild]
    return out


def hook_children(model: torch.nn.Module) -> list:
    """Wraps the forward of the modules of `profiled_children(model)` in `record_function` regions; returns the
    hook handles."""
    handles = []
    for name, modules in profiled_children(model).items():
        for module in modules:
            stack = []  # one entry per active call (a module may run several times per step, e.g. per crop size)

            def enter(module, args, name=name, stack=stack):
                region = record_function(MODULE_PREFIX + name)
                region.__enter__()
                stack.append(region)

            def leave(module, args, output, stack=stack):
                stack.pop().__exit__(None, None, None)

            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
    return handles


def profile_model(entry: speed.Entry, precision: str, device: torch.device, warmup: int, steps: int) -> dict:
    """Builds `entry`, runs `warmup` plain steps and `steps` profiled ones; returns its per-step breakdown."""
    model = speed.build(entry, device)
    batches = [speed.inputs(model, entry.setting, device) for _ in range(2)]
    step = speed.make_step(model, precision, device, region=lambda name: record_function(PHASE_PREFIX + name))
    handles = hook_children(model)
    for i in range(warmup):
        step(batches[i % 2])
    with FlopCounterMode(
        display=False
    ) as flops:  # one step: the FLOPs of matmuls, convolutions, attention (forward + backward)
        step(batches[0])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        start = time.perf_counter()
        for i in range(steps):
            step(batches[i % 2])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = (time.perf_counter() - start) / steps
    for handle in handles:
        handle.remove()
    events = prof.key_averages()

    def regions(prefix: str) -> dict:
        return {
            e.key.removeprefix(prefix): {
                "cpu_ms_per_step": e.cpu_time_total / 1e3 / steps,
                "calls_per_step": e.count / steps,
            }
            for e in events
            if e.key.startswith(prefix)
        }

    phases = regions(PHASE_PREFIX)
    ops = sorted(
        (e for e in events if not e.key.startswith((PHASE_PREFIX, MODULE_PREFIX))),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    return {
        "setting": entry.setting,
        "step_seconds_wall": wall,
        "gflops_per_step": flops.get_total_flops() / 1e9,
        "phases": {p: phases[p] for p in PHASES if p in phases},
        "modules_forward": regions(MODULE_PREFIX),
        "top_ops_by_self_cpu": [
            {
                "name": e.key,
                "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                "cpu_ms_per_step": e.cpu_time_total / 1e3 / steps,
                "calls_per_step": e.count / steps,
            }
            for e in ops[:TOP_OPS]
        ],
    }


def summary(label: str, result: dict, reference: dict | None) -> str:
    """A readable block per model; with `reference` (the first model) also each phase's ratio to it."""
    lines = [
        f"== {label}: {result['step_seconds_wall'] * 1e3:.0f} ms/step wall (profiled), {result['gflops_per_step']:.0f} GFLOP"
    ]
    if reference:
        lines[0] += (
            f" (x{result['gflops_per_step'] / reference['gflops_per_step']:.2f} FLOPs, "
            f"x{result['step_seconds_wall'] / reference['step_seconds_wall']:.2f} time)"
        )

    def ratio(kind: str, name: str, value: float) -> str:
        other = (reference or {}).get(kind, {}).get(name)
        return f"  x{value / other['cpu_ms_per_step']:.2f}" if other and other["cpu_ms_per_step"] else ""

    for kind, title in (("phases", "phase"), ("modules_forward", "module forward")):
        for name, r in result[kind].items():
            ms = r["cpu_ms_per_step"]
            lines.append(
                f"  {title:<15} {name:<22} {ms:9.1f} ms  ({r['calls_per_step']:g} calls){ratio(kind, name, ms)}"
            )
    lines.append("  top ops by self CPU time:")
    lines += [
        f"    {op['name']:<40} {op['self_cpu_ms_per_step']:9.1f} ms  ({op['calls_per_step']:g} calls)"
        for op in result["top_ops_by_self_cpu"]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", default="mae", help=f"one of {', '.join(speed.GROUPS)}")
    parser.add_argument("--models", default=None, help="comma-separated labels of the group (default: all)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=None, help="override the settings' batch (smoke tests)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/profile_<group>.json")
    args = parser.parse_args(argv)
    if args.group not in speed.GROUPS:
        raise SystemExit(f"unknown group '{args.group}'; choose from {', '.join(speed.GROUPS)}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else speed.pick_device()
    entries = {e.label: e for e in speed.GROUPS[args.group].entries}
    labels = list(entries) if args.models is None else [m.strip() for m in args.models.split(",")]
    unknown = [m for m in labels if m not in entries]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)} in group '{args.group}'; choose from {list(entries)}")
    results = {}
    for label in labels:
        entry = entries[label]
        if args.batch_size is not None:
            entry = replace(entry, setting={**entry.setting, "batch_size": args.batch_size})
        print(f"profiling {label} ({args.precision}, {args.warmup} warm-up + {args.steps} steps)", flush=True)
        results[label] = profile_model(entry, args.precision, device, args.warmup, args.steps)
    reference = results[labels[0]]
    for label, result in results.items():
        print(summary(label, result, reference if label != labels[0] else None))
    output = Path(args.output or Path(__file__).parent / "results" / f"profile_{args.group}.json")
    report = {
        "benchmark": f"torch.profiler over training steps of speed.py group '{args.group}'",
        "regions": (
            "phase::<name>: CPU time per step inside the phase (inclusive); module::<child>: CPU time per step of "
            "the child's forward (inclusive; backward runs in the autograd engine, under phase::backward)"
        ),
        "precision": args.precision,
        "device": device.type,
        "threads": args.threads,
        "timing": {"warmup": args.warmup, "steps": args.steps},
        "machine": {"cpu": speed.cpu_name(), "platform": platform.platform()},
        "versions": {"torch": torch.__version__},
        "models": results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
