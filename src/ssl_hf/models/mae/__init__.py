from ...cpu_presets import cpu_preset
from ...registry import MethodSpec, register_method
from .configuration_mae import MAEConfig
from .modeling_mae import MAEForPreTraining, MAEPreTrainingOutput


register_method(
    MethodSpec(
        name="mae",
        config_class=MAEConfig,
        model_class=MAEForPreTraining,
        views="mae",
        feature_pool="mean",
        # MAE (ViT-B, IN-1k): AdamW betas (0.9, 0.95), wd 0.05, blr 1.5e-4, 40/800 warm-up epochs
        training_defaults={
            "base_learning_rate": 1.5e-4,
            "weight_decay": 0.05,
            "adam_beta2": 0.95,
            "warmup_ratio": 0.05,
        },
        presets={
            **cpu_preset("mae"),  # 32x32 on 2 CPU cores, measured: ssl_hf/cpu_presets.py
            # He et al. 2022: ViT-B/16 at 224, decoder 512x8, blr 1.5e-4 at global batch 4096
            "mae-vitb16": {"backbone": "vit-base", "image_size": 224, "patch_size": 16},
            # the small-scale setting of ASL's CIFAR experiments for its MAE baseline (decoder depth 8 [I])
            "mae-vits4-cifar": {
                "backbone": "vit-small",
                "image_size": 32,
                "patch_size": 4,
                "decoder_hidden_size": 384,
                "decoder_num_attention_heads": 6,
                "decoder_intermediate_size": 1536,
                "base_learning_rate": 1e-3,
                "adam_beta2": 0.999,
                "warmup_ratio": 10 / 1600,
            },
        },
    )
)
