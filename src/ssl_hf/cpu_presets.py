"""`--preset <method>-cpu`: recipes for 32x32 images on 2 CPU cores that finish within 20 minutes and learn.

The papers' presets stay as they are; these are ours [I], chosen by measurement with the online k-NN monitor
(`benchmarks/sweep.py`, results in `benchmarks/results/sweeps/`) on the built-in `digit-scenes`, evaluated on
`digits`. Each recipe sets backbone size, views, optimiser, learning rate, schedules, heads and temperatures, and
`--mixed_precision auto` (bf16 autocast only where a timing at start shows it is faster). Every value is a config or
training field, so any flag given on the command line or in a `--config` file wins.

Shared choices, each measured (see the sweeps):
- Views without horizontal flip (digits are not mirror-symmetric) and without blur (a 3-px kernel on 32 px erases
  strokes); crops no smaller than a third of the image.
- Colour views permute the RGB channels (`channel_permute_prob` 1.0): the built-in sets give each image its own
  background and digit colours, and without the permutation two views match on colour alone.
- Small backbones: a ResNet-18 layout at a quarter of its width with the 3x3 stem (BYOL, MSBReg); ViT-Tiny width with
  4 or 6 blocks (the MAE family, DINO, SelfPatch).
- Online k-NN on `digits` (2,000 images per split) every few hundred steps, under 10 % of the run.
"""

from typing import Any


# ResNet-18 layout at a quarter of its width, 3x3 stride-1 stem (32x32 images keep their resolution)
_SMALL_RESNET = {
    "backbone": "resnet-18-small-stem",
    "hidden_sizes": [16, 32, 64, 128],
    "embedding_size": 16,
    "image_size": 32,
}
_MONITOR = {"eval_every": 100, "eval_max_images": 2000, "mixed_precision": "auto", "save_steps": 500}
_COLOUR_VIEWS = {"hflip": False, "blur_prob": "0", "channel_permute_prob": 1.0, "crop_min_scale": 0.25}
_MAE_FAMILY = {
    "backbone": "vit-tiny",
    "num_hidden_layers": 6,
    "image_size": 32,
    "patch_size": 4,
    "mask_ratio": 0.75,
    "decoder_hidden_size": 128,
    "decoder_num_hidden_layers": 2,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 512,
    "batch_size": 128,
    "learning_rate": 1.5e-3,
    "adam_beta2": 0.95,
    "weight_decay": 0.05,
    "warmup_ratio": 0.1,
    "hflip": False,
    "crop_min_scale": 0.35,
    **_MONITOR,
}
_SELF_DISTILLATION = {
    "backbone": "vit-tiny",
    "num_hidden_layers": 4,
    "image_size": 32,
    "patch_size": 8,
    "out_dim": 1024,
    "head_hidden_dim": 512,
    "head_bottleneck_dim": 128,
    "use_bn_in_head": True,
    "num_local_crops": 4,
    "local_crop_size": 16,
    "global_crop_min_scale": 0.3,
    "local_crop_min_scale": 0.08,
    "freeze_last_layer_fraction": 0.0,
    "ema_base": 0.99,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.1,
    **_COLOUR_VIEWS,
    "solarize_prob": "0,0.2,0",
    **_MONITOR,
}
_EMBEDDING = {
    **_SMALL_RESNET,
    "proj_hidden_dim": 1024,
    "pred_hidden_dim": 1024,
    "proj_out_dim": 256,
    "ema_base": 0.99,
    "batch_size": 64,
    "optimizer": "lars",
    "lars_trust_coefficient": 0.02,
    "weight_decay": 1e-5,
    "warmup_ratio": 0.1,
    **_COLOUR_VIEWS,
    "solarize_prob": "0,0.2",
    **_MONITOR,
}

CPU_PRESETS: dict[str, dict[str, Any]] = {
    "mae": {**_MAE_FAMILY, "norm_pix_loss": True, "max_steps": 1500},
    "asl": {**_MAE_FAMILY, "max_steps": 1000},
    "tec": {**_MAE_FAMILY, "attention_topk": 5, "attention_tau": 1.8, "max_steps": 1000},
    # peak lr 0.4 at batch 64 for both: BYOL's base lr 1.6 x 64 / 256; MSBReg's 0.4 x 64 / 256 x K = 4
    "byol": {**_EMBEDDING, "base_learning_rate": 1.6, "max_steps": 1000},
    "msbreg": {**_EMBEDDING, "num_views": 4, "base_learning_rate": 0.4, "max_steps": 600},
    "dino": {**_SELF_DISTILLATION, "max_steps": 800},
    "selfpatch": {**_SELF_DISTILLATION, "max_steps": 600},
}


def cpu_preset(method: str) -> dict[str, dict[str, Any]]:
    """`{"<method>-cpu": fields}`, for a method's `MethodSpec.presets`."""
    return {f"{method}-cpu": dict(CPU_PRESETS[method])}
