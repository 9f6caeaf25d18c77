from ...cpu_presets import cpu_preset
from ...registry import MethodSpec, register_method
from .aggregation import ClassAttentionBlock, SelfPatchAggregation, neighbor_index, top_neighbors
from .configuration_selfpatch import SelfPatchConfig
from .modeling_selfpatch import SelfPatchForPreTraining, SelfPatchPreTrainingOutput


register_method(
    MethodSpec(
        name="selfpatch",
        config_class=SelfPatchConfig,
        model_class=SelfPatchForPreTraining,
        views="multicrop",
        feature_pool="mean",
        default_backbone="vit-small",
        # main_selfpatch.py (DINO's recipe): AdamW, lr 5e-4 x batch / 256, wd cosine 0.04 -> 0.4, 10 warm-up epochs of
        # 200, per-tensor grad clip 3.0
        training_defaults={
            "base_learning_rate": 5e-4,
            "weight_decay": 0.04,
            "warmup_ratio": 10 / 200,
            "max_grad_norm": 3.0,
            "clip_per_tensor": True,
            "weight_decay_end": 0.4,
        },
        presets={
            **cpu_preset("selfpatch"),  # 32x32 on 2 CPU cores, measured: ssl_hf/cpu_presets.py
            # Supp. App. A: ViT-S/16 on ImageNet, 2 x 224 + 8 x 96 crops split at 0.25, K 65536 / 4096, k = 4
            "selfpatch-vits16": {"backbone": "vit-small", "image_size": 224, "patch_size": 16},
            # Supp. Tab. 3: ViT-Ti/16 on COCO, 2 x 224 + 2 x 96 crops, K 4096 / 4096
            "selfpatch-vitti16-coco": {
                "backbone": "vit-tiny",
                "image_size": 224,
                "patch_size": 16,
                "num_local_crops": 2,
                "out_dim": 4096,
            },
            # 32x32 images [I, not in the paper]: ViT-S/4, 2 x 32 + 6 x 16 crops split at 0.3, K 4096 / 1024, k = 2
            "selfpatch-vits4-cifar": {
                "backbone": "vit-small",
                "image_size": 32,
                "patch_size": 4,
                "num_local_crops": 6,
                "local_crop_size": 16,
                "global_crop_min_scale": 0.3,
                "out_dim": 4096,
                "patch_out_dim": 1024,
                "num_neighbors_k": 2,
            },
        },
    )
)
