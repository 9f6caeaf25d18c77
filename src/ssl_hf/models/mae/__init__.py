from ...registry import MethodSpec, register_method
from .configuration_mae import MAEConfig
from .modeling_mae import MAEForPreTraining, MAEPreTrainingOutput


register_method(
    MethodSpec(
        name="mae",
        config_class=MAEConfig,
        model_class=MAEForPreTraining,
        views="mae",
        # MAE (ViT-B, IN-1k): AdamW betas (0.9, 0.95), wd 0.05, blr 1.5e-4, 40/800 warm-up epochs
        training_defaults={
            "base_learning_rate": 1.5e-4,
            "weight_decay": 0.05,
            "adam_beta2": 0.95,
            "warmup_ratio": 0.05,
        },
    )
)
