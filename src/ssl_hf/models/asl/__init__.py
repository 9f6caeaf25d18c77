from ...cpu_presets import cpu_preset
from ...registry import MethodSpec, register_method
from .configuration_asl import ASLConfig
from .modeling_asl import ASLForPreTraining, ASLPreTrainingOutput, asl_alignment_loss


register_method(
    MethodSpec(
        name="asl",
        config_class=ASLConfig,
        model_class=ASLForPreTraining,
        views="mae",
        feature_pool="mean",
        # ASL appendix, ViT-B/16: AdamW (0.9, 0.95), wd 0.05, blr 1.5e-4, 40 warm-up epochs (as MAE)
        training_defaults={
            "base_learning_rate": 1.5e-4,
            "weight_decay": 0.05,
            "adam_beta2": 0.95,
            "warmup_ratio": 0.05,
        },
        presets={
            **cpu_preset("asl"),  # 32x32 on 2 CPU cores, measured: ssl_hf/cpu_presets.py
            # appendix: ViT-B/16, MAE decoder 512x8, AEE 1 layer x 768 x 4 heads, dropout 0.5
            "asl-vitb16": {"backbone": "vit-base", "image_size": 224, "patch_size": 16},
            # appendix (CIFAR, Tab. 6): ViT-S/4 at 32, decoder width 384 x 6 heads (depth 8 [I]),
            # AdamW (0.9, 0.999), wd 0.05, base lr 1e-3 at batch 512, 10 of 1600 epochs warm-up
            "asl-vits4-cifar": {
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
