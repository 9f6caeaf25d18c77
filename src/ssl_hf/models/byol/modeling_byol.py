"""BYOL: an online network predicts an EMA target network's projection of another view of the same image."""

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import ModelOutput

from ...backbones import build_backbone, feature_dim, global_features
from ...layers.ema import cosine_momentum, ema_update_
from ...losses.embedding import byol_loss
from ...modeling_base import SSLPreTrainedModel
from .configuration_byol import BYOLConfig


@dataclass
class BYOLPreTrainingOutput(ModelOutput):
    """Output of `BYOLForPreTraining`.

    Args:
        loss: The training loss.
        loss_byol: BYOL's regression loss (the normalised-MSE between predictions and the other view's target
            projections, both directions); equal to `loss`, logged under BYOL's name.
        predictions: `(2, B, d)` online predictions.
        target_projections: `(2, B, d)` target projections.
    """

    loss: Tensor | None = None
    loss_byol: Tensor | None = None
    predictions: Tensor | None = None
    target_projections: Tensor | None = None


class MLPHead(nn.Sequential):
    """BYOL's projector / predictor: (Linear -> norm (BN, LN or none) -> ReLU) x (num_layers - 1) -> Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, norm: str, num_layers: int = 2):
        norm_layer = {"bn": nn.BatchNorm1d, "ln": nn.LayerNorm}.get(norm)
        layers = []
        for i in range(num_layers - 1):
            layers += [
                nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim),
                norm_layer(hidden_dim) if norm_layer else nn.Identity(),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers, nn.Linear(hidden_dim, out_dim))


class BYOLPreTrainedModel(SSLPreTrainedModel):
    """Base class of BYOL-style models: online encoder + projector + predictor, EMA target encoder + projector."""

    config_class = BYOLConfig
    base_model_prefix = "byol"
    _no_split_modules = ["ResNetStage", "ViTLayer"]

    def _init_weights(self, module):
        """Heads keep PyTorch's default init (as BYOL); the backbone uses its own transformers init."""

    def _build(self, config) -> None:
        self.backbone = build_backbone(config.backbone_config)
        width = feature_dim(config.backbone_config)
        projector = (width, config.proj_hidden_dim, config.proj_out_dim, config.head_norm, config.proj_num_layers)
        self.projector = MLPHead(*projector)
        self.predictor = MLPHead(config.proj_out_dim, config.pred_hidden_dim, config.proj_out_dim, config.head_norm)
        self.target_backbone = build_backbone(config.backbone_config)
        self.target_projector = MLPHead(*projector)
        self.post_init()
        with torch.no_grad():  # the target starts as a copy of the online network
            self.target_backbone.load_state_dict(self.backbone.state_dict())
            self.target_projector.load_state_dict(self.projector.state_dict())
        self._fixed_parameters = tuple(
            name for name, _ in self.named_parameters() if name.startswith(("target_backbone.", "target_projector."))
        )
        self.freeze_fixed_parameters()

    def lr_scales(self) -> dict[str, float]:
        """`{"predictor.": pred_lr_scale}`; at 1 the predictor joins the encoder's groups (`param_groups`)."""
        return {"predictor.": self.config.pred_lr_scale}

    def _target_online_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        target = [*self.target_backbone.parameters(), *self.target_projector.parameters()]
        return target, online

    @torch.no_grad()
    def post_optimizer_step(self, step: int, max_steps: int) -> None:
        """EMA update of the target: `xi <- tau xi + (1 - tau) theta` with the cosine momentum of the step."""
        tau = cosine_momentum(step, max_steps, self.config.ema_base)
        ema_update_(*self._target_online_pairs(), tau)

    def embed_views(self, pixel_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Runs every view separately (BatchNorm statistics per view, as BYOL).

        Args:
            pixel_values: `(B, K, C, H, W)` K views of B images.

        Returns:
            online projections, online predictions and target projections, each `(K, B, d)`.
        """
        if pixel_values.ndim != 5:
            raise ValueError(
                f"{type(self).__name__} expects pixel_values of shape (batch, views, channels, height, width), got "
                f"{tuple(pixel_values.shape)}; the training views preset produces them."
            )
        projections, predictions, targets = [], [], []
        for view in pixel_values.unbind(1):
            z = self.projector(global_features(self.backbone, view))
            projections.append(z)
            predictions.append(self.predictor(z))
            with torch.no_grad():
                targets.append(self.target_projector(global_features(self.target_backbone, view)))
        return torch.stack(projections), torch.stack(predictions), torch.stack(targets)


class BYOLForPreTraining(BYOLPreTrainedModel):
    """BYOL pre-training on any ResNet or ViT backbone.

    Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020.
    Reference: https://github.com/deepmind/deepmind-research/tree/master/byol (JAX).

    The online encoder (`self.backbone`, a stock `ResNetModel` or `ViTModel`) is what `ssl-hf export` saves. The
    target encoder and projector are frozen copies updated by `post_optimizer_step` (cosine momentum from `ema_base`
    to 1); they are saved with the checkpoint so a resumed run continues exactly.

    Differences from the reference:
        - The loss is the mean of the two regression directions (`loss_reduction="mean"`, reference: their sum) [I].
        - The EMA covers parameters; the target's BatchNorm statistics come from its own forward passes [I].
        - A ViT backbone (cls token) is an option; the paper uses ResNets.
    """

    def __init__(self, config: BYOLConfig):
        super().__init__(config)
        self._build(config)

    def forward(self, pixel_values: Tensor, return_dict: bool = True) -> BYOLPreTrainingOutput | tuple:
        _, predictions, targets = self.embed_views(pixel_values)
        if predictions.shape[0] != 2:
            raise ValueError(f"BYOL uses 2 views per image, got {predictions.shape[0]}; MSBReg takes K views.")
        loss = byol_loss(predictions[0], predictions[1], targets[0], targets[1], self.config.loss_reduction)
        out = BYOLPreTrainingOutput(loss=loss, loss_byol=loss, predictions=predictions, target_projections=targets)
        return out if return_dict else out.to_tuple()
