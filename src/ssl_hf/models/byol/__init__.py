from ...cpu_presets import cpu_preset
from ...registry import MethodSpec, register_method
from .configuration_byol import BYOLConfig
from .modeling_byol import BYOLForPreTraining, BYOLPreTrainingOutput, MLPHead, cosine_momentum


register_method(
    MethodSpec(
        name="byol",
        config_class=BYOLConfig,
        model_class=BYOLForPreTraining,
        views="byol",
        default_backbone="resnet-18",
        # BYOL (ResNet-50, IN-1k): LARS, base lr 0.2 (x batch / 256), wd 1.5e-6, 10 of 1000 epochs warm-up
        training_defaults={
            "optimizer": "lars",
            "base_learning_rate": 0.2,
            "weight_decay": 1.5e-6,
            "warmup_ratio": 10 / 1000,
        },
        presets={
            **cpu_preset("byol"),  # 32x32 on 2 CPU cores, measured: ssl_hf/cpu_presets.py
            "byol-resnet50": {"backbone": "resnet-50", "image_size": 224},
            # the STL-10 setting of MSBReg's Tab. 4 for its BYOL baseline: ResNet-18, heads 512 -> 128 at 96 px
            "byol-resnet18-stl10": {
                "backbone": "resnet-18",
                "image_size": 96,
                "proj_hidden_dim": 512,
                "proj_out_dim": 128,
                "pred_hidden_dim": 512,
                "base_learning_rate": 0.5,
                "weight_decay": 1e-5,
                "warmup_ratio": 10 / 320,
            },
        },
    )
)
