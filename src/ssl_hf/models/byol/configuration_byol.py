"""BYOL configuration."""

from typing import Literal

from huggingface_hub.dataclasses import strict

from ...configuration_base import SSLEncoderConfig


@strict
class BYOLConfig(SSLEncoderConfig):
    """Configuration of `BYOLForPreTraining` (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020).

    The defaults are the paper's ResNet-50 heads (4096 hidden, 256 out) on the `backbone_config` (ResNet-18 by
    default; any `ResNetConfig` or `ViTConfig`).

    Args:
        backbone_config: The encoder (see `SSLEncoderConfig`).
        image_size: Side of the training views (see `SSLEncoderConfig`).
        proj_hidden_dim: Projector hidden width.
        proj_out_dim: Projector output width (the embedding).
        proj_num_layers: Linear layers of the projector (2 as BYOL; 3 puts one more hidden layer between the backbone
            and the loss, as SimCLR v2's projector).
        pred_hidden_dim: Predictor hidden width.
        pred_lr_scale: Factor on the predictor's learning rate (1 as BYOL). A predictor that adapts faster than the
            encoder is what keeps a non-contrastive embedding from collapsing in Tian et al.'s analysis (DirectPred,
            ICML 2021; SimSiam keeps its predictor's lr fixed for the same reason).
        head_norm: Normalisation inside projector and predictor: `"bn"` (BYOL), `"ln"` (the collapse setting of
            MSBReg's Tab. 4) or `"none"`.
        ema_base: Base momentum of the target network; it follows a cosine from `ema_base` to 1 over the run.
        loss_reduction: `"mean"` of the two regression directions (default [I]) or their `"sum"` (the reference's
            scale, twice as large; LARS's trust ratio makes the two nearly equivalent).
        augmentation: `"byol"` (asymmetric pair: blur 1.0/0.1, solarise 0.0/0.2) or `"symmetric"` (every view: blur
            1.0, solarise 0.2, as MSBReg's Tab. 1).
    """

    model_type = "ssl_byol"

    proj_hidden_dim: int = 4096
    proj_out_dim: int = 256
    proj_num_layers: int = 2
    pred_hidden_dim: int = 4096
    pred_lr_scale: float = 1.0
    head_norm: Literal["bn", "ln", "none"] = "bn"
    ema_base: float = 0.996
    loss_reduction: Literal["mean", "sum"] = "mean"
    augmentation: Literal["byol", "symmetric"] = "byol"

    @property
    def num_views(self) -> int:
        return 2

    def validate_byol(self):
        if not 0 <= self.ema_base <= 1:
            raise ValueError(f"ema_base must be in [0, 1], got {self.ema_base}")
        if self.proj_num_layers < 2:
            raise ValueError(
                f"proj_num_layers must be >= 2 (Linear -> norm -> ReLU -> Linear), got {self.proj_num_layers}"
            )
        if not self.pred_lr_scale > 0:
            raise ValueError(f"pred_lr_scale must be > 0 (1 = the encoder's learning rate), got {self.pred_lr_scale}")
        for name in ("proj_hidden_dim", "proj_out_dim", "pred_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
