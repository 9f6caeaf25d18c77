"""`--preset <method>-cpu`: recipes for 32x32 images on 2 CPU cores, within 20 minutes, meant to learn visibly.

Each entry below says what was measured with it; for some methods no recipe learns yet at this budget, and the entry
says so.

The papers' presets stay as they are; these are ours [I], chosen by measurement with the online k-NN monitor
(`benchmarks/sweep.py`, results in `benchmarks/results/sweeps/`) on the built-in `digit-scenes`, evaluated on
`digits`. Each recipe sets backbone size, views, optimiser, learning rate, schedules, heads and temperatures, and
`--mixed_precision auto` (bf16 autocast only where a timing at start shows it is faster). Every value is a config or
training field, so any flag given on the command line or in a `--config` file wins.

Shared choices, each measured (see the sweeps):
- Views without horizontal flip (digits are not mirror-symmetric) and without blur (a 3-px kernel on 32 px erases
  strokes); crops no smaller than a quarter of the image (a third for the MAE family).
- Colour views permute the RGB channels (`channel_permute_prob` 1.0): the built-in sets give each image its own
  background and digit colours, and without the permutation two views match on colour alone.
- Small backbones: a ResNet-18 layout at a quarter of its width with the 3x3 stem (BYOL, SelfPatch), with a stride-2
  first stage for a step 2.5x cheaper (MSBReg, DINO); ViT-Tiny width with 6 blocks (the MAE family).
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
# ... with a stride-2 first stage (16x16 maps; the digits are 8x8 sources upscaled, so 16x16 keeps their detail).
# Measured (sweeps/msbreg_cpu/ds_2000steps against preset_1200steps, seed 0): a step costs 2.5x less (120 against 53
# images/s), the online k-NN at step 1,200 is 45.5 % against 43.0 %, and 2,000 steps (18 min) end at export k-NN 55.9 %
# against the 1,200-step run's 51.0 %.
_DOWNSAMPLED = {"downsample_in_first_stage": True}
_MONITOR = {"eval_every": 100, "eval_max_images": 2000, "mixed_precision": "auto", "save_steps": 500}
_COLOUR_VIEWS = {"hflip": False, "blur_prob": "0", "channel_permute_prob": 1.0, "crop_min_scale": 0.25}
_MAE_FAMILY = {
    "backbone": "vit-tiny",
    "num_hidden_layers": 6,
    "image_size": 32,
    "patch_size": 8,
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
    "eval_every": 200,
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

# DINO's ResNet recipe keeps these of the ViT recipe (heads, local-crop sizes, momentum, views, monitor)
_DINO_HEAD_AND_VIEWS = (
    "head_hidden_dim",
    "head_bottleneck_dim",
    "use_bn_in_head",
    "local_crop_size",
    "local_crop_min_scale",
    "freeze_last_layer_fraction",
    "ema_base",
    "warmup_ratio",
    "hflip",
    "blur_prob",
    "channel_permute_prob",
    "solarize_prob",
    *_MONITOR,
)

# DINO's ResNet recipe at stride 1 (measured below, under "dino"); SelfPatch runs it, with its patch loss, and keeps
# the stride-1 first stage: the 4x4 last stage is its grid of patch tokens (2x2 with a stride-2 first stage)
_DINO_RESNET = {
    **_SMALL_RESNET,
    **{k: v for k, v in _SELF_DISTILLATION.items() if k in _DINO_HEAD_AND_VIEWS},
    "out_dim": 64,
    "teacher_temp": 0.02,
    "warmup_teacher_temp": 0.02,
    "num_local_crops": 0,
    "global_crop_min_scale": 0.25,
    "batch_size": 64,
    "optimizer": "lars",
    "lars_trust_coefficient": 0.02,
    "base_learning_rate": 0.8,
    "weight_decay": 1e-5,
    "weight_decay_end": 1e-5,
    "clip_per_tensor": False,
    "max_steps": 1500,
}

CPU_PRESETS: dict[str, dict[str, Any]] = {
    # Measured (benchmarks/results/sweeps/mae_cpu, seed 0): with 4-pixel patches (64 tokens) 300 steps move the
    # mean-pooled features *below* MAE's own initialisation (linear probe 25.4 % at mask 0.75, 32.3 % at mask 0.5,
    # against 42.4 % at step 0). With 8-pixel patches (16 tokens, 4 visible; ~300 img/s on one thread) 1,200 steps
    # (19 epochs) lift the linear probe to 48.5 % against its step-0 floor's 33.3 %, k-NN 20.3 % against 15.9 %.
    # Quality benchmark, 2 seeds (7.7 min each on one thread): linear 48.4 ± 0.1 % against 36.5 ± 4.5 %.
    "mae": {**_MAE_FAMILY, "norm_pix_loss": True, "max_steps": 1200},
    # ASL shares MAE's settings. Measured (quality benchmark, 2 seeds, at the paper's alignment weight 1): loss_align
    # is exactly 0 and loss_mae stays near 0.9 for ~700 steps (both branches predict the same constant), and the
    # export ends below its floor (linear 16.4 % against 35.9 %). sweeps/asl_cpu (seed 0): weight 0.1 gives linear
    # 43.8 %, weight 0.01 gives 47.3 %, against the floor's 36.7 % [I].
    "asl": {**_MAE_FAMILY, "alignment_weight": 0.01, "max_steps": 1200},
    # TEC learns from the MAE export of the same seed. Measured (sweeps/tec_cpu, 4-pixel patches, 300 steps at batch
    # 128, from the 300-step MAE export whose own linear probe is 25.4 %): linear 48.5 % against its step-0 floor's
    # 44.4 %, k-NN 16.0 % against 12.0 %. With 8-pixel patches from the 1,200-step MAE export (quality benchmark,
    # 2 seeds, 13.1 min each on one thread): linear 51.6 ± 0.5 % against its floor's 39.0 ± 1.9 %, k-NN 38.8 %
    # against 21.4 %, above its MAE base (48.4 % linear, 20.2 % k-NN).
    "tec": {**_MAE_FAMILY, "attention_topk": 5, "attention_tau": 1.8, "max_steps": 1000},
    # Measured (sweeps/byol_cpu): without the channel permutation, or at batch 128, the online k-NN stays at the
    # floor (14.0 %) while the effective rank of the embedding falls from ~95 to < 10 (LARS lr 0.15-0.5, AdamW 1e-3,
    # EMA 0.9-0.996). At batch 64 with the permutation: peak lr 0.4 lifts k-NN to 23.1 % in 400 steps (floor 15.6 %)
    # but over 1,000 steps the rank falls to ~2 and k-NN back to 19.0 % (quality seed 0); peak lr 0.2 with weight
    # decay 1e-4 keeps climbing over 600 steps (online k-NN 24.3 %, floor 14.0 %).
    # With MSBReg's stride-2 first stage and 3,000 steps (quality seed 0, stopped at step 1,100) the rank fell from 43
    # to 2.4 by step 700 and the online k-NN stayed at 20-23 % (12.7 / 15.3 / 19.9 / 23.1 / 22.7 % at steps 100 / 300
    # / 500 / 700 / 900): BYOL keeps its stride-1 600-step recipe.
    "byol": {**_EMBEDDING, "base_learning_rate": 0.8, "weight_decay": 1e-4, "max_steps": 600},
    # Measured (sweeps/msbreg_cpu, quality seed 0): 300 steps reach k-NN 23.7 % against the floor's 15.6 %, linear
    # 48.5 % against 19.6 %; 600 steps (the former preset) 41.7 % and 70.2 %. Peak lr 0.4 = base 0.4 x 64 / 256 x K (4).
    # Time: 26 min per seed on one thread beside another run; alone on 2 cores 12.9 and 12.2 min (seeds 0, 1; k-NN 43.1
    # and 35.2 % against 15.6 and 17.2 %; results/archive/msbreg_600steps_quality). With the stride-2 first stage
    # (_DOWNSAMPLED) a step costs 2.5x less: 1,800 steps, quality benchmark alone on 2 cores, seed 0: k-NN 54.8 %
    # against its floor's 13.7 %, linear 69.4 %, 16.5 min; seed 1: 51.1 % against 15.4 %, linear 69.2 %, 16.4 min.
    # `make pretrain` with it (700 steps, 70-step warm-up) alone on 2 cores: 6 min 55 s end to end, k-NN 41.2 %
    # against 13.7 %.
    # A 3-layer projector (`--proj_num_layers 3`; results/diagnostics/msbreg_proj3_quality, alone on 2 cores, 16-17
    # min) trades one dataset for the other: pre-trained on digits, k-NN 68.8 / 63.5 % (seeds 0 / 1; 2 layers: 62.4 /
    # 61.3 %), linear 88.0 / 83.8 %; on digit-scenes 51.3 / 48.9 % (2 layers: 54.8 / 51.1 %). The preset keeps 2.
    # With 3 stages ([16, 32, 64], a 4x4 last map and a 64-d feature) and the 3-layer projector, pre-trained on
    # digits, seed 0 (results/diagnostics/msbreg_3stage_proj3_quality, alone on 2 cores): k-NN 74.3 % against its
    # floor's 13.3 %, linear 88.0 %, 14.1 min: the first export above raw pixels (68.8 %). So the preset has them.
    # Quality benchmark, alone on 2 cores: pre-trained on digit-scenes, k-NN 49.2 / 57.4 % (seeds 0 / 1) against
    # floors of 13.3 / 14.8 %, linear 70.9 / 73.3 %, 18.3 / 16.5 min (the 4-stage 2-layer recipe before it: 54.8 /
    # 51.1 %, linear 69.4 / 69.2 %; results/archive/msbreg_4stage_1800steps_quality); pre-trained on digits, seed 1:
    # k-NN 76.8 % against 14.8 %, linear 90.7 %, 15.6 min; seed 0 re-run as the preset: 74.26 %, the diagnostic
    # run's number to the digit (a CPU run is deterministic), 17.8 min. Its records say 110-141 images/s against the
    # 4-stage recipe's 120-124 (different sessions, so not a speed comparison). `make pretrain` (700 steps, 70-step
    # warm-up) alone on 2 cores: 6 min 54 s end to end, k-NN 38.0 % against 13.3 % (benchmarks/results/make_pretrain).
    "msbreg": {
        **_EMBEDDING,
        **_DOWNSAMPLED,
        "hidden_sizes": [16, 32, 64],
        "depths": [2, 2, 2],
        "proj_num_layers": 3,
        "num_views": 4,
        "base_learning_rate": 0.4,
        "max_steps": 1800,
    },
    # Measured (sweeps/dino_cpu): with a 4-block ViT no variant leaves the floor (12.1 %) within 150 steps: BatchNorm
    # in the head keeps the teacher away from uniform but matches views on colour; with the channel permutation the
    # teacher drifts back towards uniform (6.5-6.6 of 6.93 nats); a sharper teacher (0.02) or lr 2e-3 do not change
    # that. sweeps/dino_resnet_cpu, the small ResNet (as DINO's ResNet-50 rows): with 1,024 prototypes (LARS,
    # teacher momentum 0.99 or 0.9995, teacher temperature 0.04 or 0.07, with or without local crops) the loss stays
    # near log K and the k-NN at the floor; with 64 prototypes, a 0.02 teacher and no local crops, 600 steps (9.8 min
    # on one thread beside another run) reach k-NN 20.5 % against the floor's 15.6 % and linear 39.4 % against
    # 19.6 % (seed 0): the first DINO recipe that moves, not yet by 10 points. Around it (seed 0, 600 steps): peak lr
    # 0.4 (base 1.6) ends at k-NN 14.9 %, two more 32-px crops for the student end at online k-NN 13.6 %, both at the
    # floor. The same 64-prototype recipe for longer (seed 0, alone on 2 cores): 1,000 steps (9.2 min) reach export
    # k-NN 22.5 %; 1,500 steps (13.8 min) 31.1 % against 15.6 % and linear 58.6 % against 19.6 %, online k-NN
    # 12.0 / 18.3 / 24.0 / 25.2 / 26.1 % at steps 300-1,500 (sweeps/dino_resnet_cpu/k64_tt0.02_1500steps.json).
    # Quality benchmark at 1,500 steps, 2 seeds alone on 2 cores (14.7 and 14.6 min): k-NN 31.1 and 34.7 % against
    # floors of 15.6 and 17.2 % (results/archive/dino_1500steps_quality). With the stride-2 first stage (_DOWNSAMPLED),
    # 3,500 steps in about the time of 1,500: seed 0 k-NN 51.9 % against its floor's 13.7 %, linear 66.6 %, 17.1 min
    # (online k-NN 23.0 / 32.4 / 42.7 / 45.9 / 45.2 % at steps 300 / 1,000 / 2,000 / 3,000 / 3,500); seed 1: 52.5 %
    # against 15.4 %, linear 68.4 %, 15.4 min.
    "dino": {**_DINO_RESNET, **_DOWNSAMPLED, "max_steps": 3500},
    # With the 4-block ViT (sweeps/selfpatch_cpu, quality benchmark, 2 seeds) no recipe left the floor: 300 steps of
    # the ViT recipe give k-NN 14.2 +- 0.4 % against 17.2 % (the teacher entropy rises to 6.63 of 6.93 nats, as
    # DINO's ViT); DINO's 64-prototype recipe on the ViT (600 steps) keeps online k-NN at 13.3-13.8 % while loss_patch
    # falls. So the preset runs DINO's ResNet recipe, off-paper [I]: the last stage's 4x4 positions are the patch
    # tokens, 64 patch prototypes.
    "selfpatch": {**_DINO_RESNET, "patch_out_dim": 64},
}


def cpu_preset(method: str) -> dict[str, dict[str, Any]]:
    """`{"<method>-cpu": fields}`, for a method's `MethodSpec.presets`."""
    return {f"{method}-cpu": dict(CPU_PRESETS[method])}
