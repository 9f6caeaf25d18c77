from ...cpu_presets import cpu_preset
from ...registry import MethodSpec, register_method
from .configuration_dino import DINOConfig
from .modeling_dino import DINOForPreTraining, DINOPreTrainingOutput


register_method(
    MethodSpec(
        name="dino",
        config_class=DINOConfig,
        model_class=DINOForPreTraining,
        views="multicrop",
        default_backbone="vit-small",
        # main_dino.py: AdamW, lr 5e-4 x batch / 256, wd cosine 0.04 -> 0.4, 10 warm-up epochs
        # of 100, per-tensor grad clip 3.0 (DINO's cosine ends at min_lr 1e-6: --min_learning_rate)
        training_defaults={
            "base_learning_rate": 5e-4,
            "weight_decay": 0.04,
            "warmup_ratio": 10 / 100,
            "max_grad_norm": 3.0,
            "clip_per_tensor": True,
            "weight_decay_end": 0.4,
        },
        presets={
            **cpu_preset("dino"),  # 32x32 on 2 CPU cores, measured: ssl_hf/cpu_presets.py
            # the paper's ViT-S/16 recipe: teacher temperature 0.04 -> 0.07 over 30 of 300 epochs
            "dino-vits16": {
                "backbone": "vit-small",
                "image_size": 224,
                "patch_size": 16,
                "teacher_temp": 0.07,
                "teacher_temp_warmup_fraction": 30 / 300,
                "norm_last_layer": False,
                "freeze_last_layer_fraction": 1 / 300,
                "warmup_ratio": 10 / 300,
            },
            "dino-vitb16": {"backbone": "vit-base", "image_size": 224, "patch_size": 16},
            # 32x32 images [I]: ViT-S/4, 2 x 32 px + 6 x 16 px crops, heads 4096, scales split at 0.3 (SelfPatch spec)
            "dino-vits4-cifar": {
                "backbone": "vit-small",
                "image_size": 32,
                "patch_size": 4,
                "out_dim": 4096,
                "num_local_crops": 6,
                "local_crop_size": 16,
                "global_crop_min_scale": 0.3,
            },
        },
    )
)
