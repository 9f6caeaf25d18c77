"""The speed table of the README's benchmark section, from benchmarks/results/speed.json."""

import json
from pathlib import Path


TARGETS = {
    "mae-vs-transformers": "≥ 1.0 (ssl_hf at least as fast)",
    "asl-aee-vs-mae": "≤ 1.5 (paper: ~1.5× FLOPs)",
    "asl-dle-vs-mae": "paper: ~2× FLOPs",
    "tec-vs-mae": "spec estimate ~1.5× (ViT-B/16)",
    "tec-vs-mae-vitb16": "spec estimate ~1.5×",
    "msbreg-k4-vs-byol": "≈ K/2 = 2",
    "msbreg-k8-vs-byol": "≈ K/2 = 4",
    "selfpatch-vs-dino": "spec estimate 1.4–1.6×",
}


def speed_section(path: Path) -> str:
    report = json.loads(path.read_text())
    cfg = report["config"]
    lines = [
        "**Training-step throughput** — forward + backward + optimiser step: fused AdamW, MAE decoder 512×8 (TEC: "
        "its own 2×512 decoder and the base model's forward); BYOL/MSBReg: LARS + EMA update; DINO/SelfPatch: AdamW + "
        "EMA teacher + centre update, 2 global + 6 local crops; "
        f"{report['machine']['threads']} CPU threads; the two models of a pair alternate "
        f"in one process, median of {cfg['repeats']} rounds of {cfg['steps']} steps (`benchmarks/speed.py`, torch "
        f"{report['versions']['torch']}, transformers {report['versions']['transformers']}):",
        "",
        "| pair | setting | precision | A | B | step-time ratio B / A (per-round range) | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        a, b = r["models"]
        ips = r["images_per_second"]
        low, high = r["ratio_rounds"]
        st = r.get("setting", {"backbone": "vit-small", "patch_size": 4, "image_size": 32, "batch_size": 64})
        patch = f"/{st['patch_size']}" if "patch_size" in st else ""
        setting = f"{st['backbone']}{patch} @{st['image_size']}, batch {st['batch_size']}"
        timing = r.get("timing", {})
        if timing and (timing["repeats"], timing["steps"]) != (cfg["repeats"], cfg["steps"]):
            setting += f" ({timing['repeats']} rounds of {timing['steps']} steps)"
        lines.append(
            f"| {r['pair']} | {setting} | {r['precision']} | {a}: {ips[a]:.1f} img/s | {b}: {ips[b]:.1f} img/s | "
            f"{r['ratio']:.3f} ({low:.2f}–{high:.2f}) | {TARGETS.get(r['pair'], '')} |"
        )
    return "\n".join(lines)
