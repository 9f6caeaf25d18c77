"""MSBReg: BYOL with K views, pulled to their centroid and dispersed by singular-value and Brownian forces."""

from dataclasses import dataclass

from torch import Tensor
from transformers.modeling_outputs import ModelOutput

from ...losses.embedding import brownian_loss, multiview_centroid_loss, singular_value_loss
from ..byol.modeling_byol import BYOLPreTrainedModel
from .configuration_msbreg import MSBRegConfig


@dataclass
class EmbeddingPreTrainingOutput(ModelOutput):
    """Output of `MSBRegForPreTraining`.

    Args:
        loss: The training loss.
        loss_centroid: The multiview centroid loss `L_mc`.
        loss_singular: The singular-value loss `L_s` (None when `lambda_s` is 0).
        loss_brownian: The Brownian diffusive loss `L_b` (None when `lambda_b` is 0).
        predictions: `(K, B, d)` online predictions.
        target_projections: `(K, B, d)` target projections.
    """

    loss: Tensor | None = None
    loss_centroid: Tensor | None = None
    loss_singular: Tensor | None = None
    loss_brownian: Tensor | None = None
    predictions: Tensor | None = None
    target_projections: Tensor | None = None


class MSBRegForPreTraining(BYOLPreTrainedModel):
    """MSBReg pre-training: `L = L_mc + lambda_s L_s + lambda_b L_b` on K views per image.

    Moon, Buracas, Park, Kim, Canny. "An Embedding-Dynamic Approach to Self-supervised Learning", WACV 2023.
    No public code; only the supplement (training details, Tab. 1-5) could be read.

    Online encoder + projector + predictor and an EMA target as BYOL (`BYOLForPreTraining`), every view run
    separately. `L_mc` pulls each view's prediction to the centroid of the other views' target projections,
    `L_s` (minus the nuclear norm of each view's batch of unit embeddings) spreads the batch, `L_b` gives every
    embedding a random kick each step. The peak learning rate is multiplied by K (`lr_scale_with_views`).

    Differences from the reference (the main paper's equations were not available; all reconstructed, all switches):
        - `L_mc`: leave-one-out centroid of the normalised targets, renormalised; squared distance to the normalised
          prediction, mean over views and images (`centroid_mode`) [I]. K = 2 with both lambdas 0 equals BYOL (tested).
        - `L_s`: minus the sum of singular values of each view's unit-norm prediction matrix, mean over views, in
          float32 on the local batch (not all-gathered) (`sv_loss_type`, `regularize_on`) [I].
        - `L_b`: inner product with fresh unit Gaussian directions per view and image (`brownian_noise`,
          `brownian_unit`) [I].
        - Target momentum: BYOL's cosine schedule from 0.996 (not given in the supplement) [I].
        - Augmentations: the supplement's single parameter set for every view (`augmentation="symmetric"`) [I].
    """

    config_class = MSBRegConfig

    def __init__(self, config: MSBRegConfig):
        super().__init__(config)
        self._build(config)

    def forward(self, pixel_values: Tensor, return_dict: bool = True) -> EmbeddingPreTrainingOutput | tuple:
        config = self.config
        projections, predictions, targets = self.embed_views(pixel_values)
        loss_centroid = multiview_centroid_loss(predictions, targets, config.centroid_mode)
        particles = predictions if config.regularize_on == "prediction" else projections
        loss = loss_centroid
        loss_singular = loss_brownian = None
        if config.lambda_s > 0:
            loss_singular = singular_value_loss(particles, config.sv_loss_type)
            loss = loss + config.lambda_s * loss_singular
        if config.lambda_b > 0:
            loss_brownian = brownian_loss(particles, config.brownian_noise, config.brownian_unit)
            loss = loss + config.lambda_b * loss_brownian
        out = EmbeddingPreTrainingOutput(
            loss=loss,
            loss_centroid=loss_centroid,
            loss_singular=loss_singular,
            loss_brownian=loss_brownian,
            predictions=predictions,
            target_projections=targets,
        )
        return out if return_dict else out.to_tuple()
