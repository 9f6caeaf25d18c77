from ...cpu_presets import cpu_preset
from ...registry import MethodSpec, register_method
from .configuration_msbreg import MSBRegConfig
from .modeling_msbreg import EmbeddingPreTrainingOutput, MSBRegForPreTraining


_R18_HEADS = {"proj_hidden_dim": 512, "proj_out_dim": 128, "pred_hidden_dim": 512}

register_method(
    MethodSpec(
        name="msbreg",
        config_class=MSBRegConfig,
        model_class=MSBRegForPreTraining,
        views="msbreg",
        default_backbone="resnet-18",
        # supplement §1.1 (ImageNet-100, ResNet-18): LARS, max lr 0.4 x batch / 256 x K, wd 1e-5, 10 of 320 epochs
        # warm-up; biases and BN excluded from weight decay and LARS adaptation
        training_defaults={
            "optimizer": "lars",
            "base_learning_rate": 0.4,
            "weight_decay": 1e-5,
            "warmup_ratio": 10 / 320,
        },
        presets={
            **cpu_preset("msbreg"),  # 32x32 on 2 CPU cores, measured: ssl_hf/cpu_presets.py
            # Tab. 5 best: ImageNet-100, ResNet-18 at 224, K = 8, lambda_s 0.004, lambda_b 0.5
            "msbreg-resnet18-in100": {
                "backbone": "resnet-18",
                "image_size": 224,
                **_R18_HEADS,
                "num_views": 8,
            },
            # Tab. 4: STL-10 at 96 px, base lr 0.5, lambda_b 5e-2 with BatchNorm heads (K not stated: 4 [I])
            "msbreg-resnet18-stl10": {
                "backbone": "resnet-18",
                "image_size": 96,
                **_R18_HEADS,
                "lambda_b": 0.05,
                "base_learning_rate": 0.5,
            },
            # Tab. 4 LayerNorm heads (BYOL collapses there): lambda_b 5e-3
            "msbreg-resnet18-stl10-ln": {
                "backbone": "resnet-18",
                "image_size": 96,
                **_R18_HEADS,
                "head_norm": "ln",
                "lambda_b": 0.005,
                "base_learning_rate": 0.5,
            },
            # ImageNet-1K, ResNet-50 (heads 4096 -> 256 as BYOL), max lr 0.15 x batch / 256 x K, K = 4
            "msbreg-resnet50": {
                "backbone": "resnet-50",
                "image_size": 224,
                "proj_hidden_dim": 4096,
                "proj_out_dim": 256,
                "pred_hidden_dim": 4096,
                "base_learning_rate": 0.15,
                "warmup_ratio": 10 / 300,
            },
        },
    )
)
