from transformers import AutoModel

from ...cpu_presets import cpu_preset
from ...registry import MethodSpec, register_method
from .base_model import BaseModelInfo, BaseModelTargets, TECTargets, load_base_encoder
from .configuration_tec import TECConfig
from .modeling_tec import TECForPreTraining, TECModel, TECPreTrainingOutput


_VITB = {"backbone": "vit-base", "image_size": 224, "patch_size": 16}

register_method(
    MethodSpec(
        name="tec",
        config_class=TECConfig,
        model_class=TECForPreTraining,
        views="mae",
        feature_pool="mean",
        # TEC Tab. 13: AdamW betas (0.9, 0.95), wd 0.05, blr 1.5e-4 (lr = blr x batch / 256), cosine, 40 warm-up
        # epochs of 300
        training_defaults={
            "base_learning_rate": 1.5e-4,
            "weight_decay": 0.05,
            "adam_beta2": 0.95,
            "warmup_ratio": 40 / 300,
        },
        presets={
            **cpu_preset("tec"),  # 32x32 on 2 CPU cores, measured: ssl_hf/cpu_presets.py
            # Tab. 14: tau / top-k per base model; decoder 2 x 512, 16 heads
            "tec-vitb16-mae": {**_VITB, "attention_tau": 1.8, "attention_topk": 15},
            "tec-vitb16-ibot": {**_VITB, "attention_tau": 1.0, "attention_topk": 9},
            "tec-vitl16-mae": {
                **_VITB,
                "backbone": "vit-large",
                "attention_tau": 1.4,
                "attention_topk": 15,
                "decoder_hidden_size": 768,
                "decoder_intermediate_size": 3072,
            },
            # no paper setting [I]: ViT-S/4 at 32 px with a ViT-S/4 MAE or ASL base, k ~ 7.7 % of 64 patches
            "tec-vits4-cifar": {
                "backbone": "vit-small",
                "image_size": 32,
                "patch_size": 4,
                "attention_tau": 1.8,
                "attention_topk": 5,
                "decoder_hidden_size": 256,
                "decoder_num_attention_heads": 8,
                "decoder_intermediate_size": 1024,
                "warmup_ratio": 20 / 300,
            },
        },
    )
)

AutoModel.register(TECConfig, TECModel, exist_ok=True)  # the `--keep_adapters` export
