"""MSBReg configuration."""

from typing import Literal

from huggingface_hub.dataclasses import strict

from ..byol.configuration_byol import BYOLConfig


@strict
class MSBRegConfig(BYOLConfig):
    """Configuration of `MSBRegForPreTraining`: BYOL with K views and centroid, singular-value and Brownian losses.

    Moon, Buracas, Park, Kim, Canny. "An Embedding-Dynamic Approach to Self-supervised Learning", WACV 2023
    (arXiv 2207.03552). Only the supplement is available: the loss formulas are reconstructed ([I]) so that K = 2 with
    both lambdas 0 is exactly BYOL, and every reconstructed choice is a switch.

    Defaults: the supplement's ResNet-18 heads (512 hidden, 128 out), K = 4, lambda_s 0.004, lambda_b 0.5 (Tab. 5).

    Args:
        num_views: K, augmented views per image (2 reproduces BYOL).
        lambda_s: Weight of the singular-value loss (0 disables it).
        lambda_b: Weight of the Brownian diffusive loss (0 disables it).
        centroid_mode: `"leave_one_out"` (centroid of the other views' targets, default [I]), `"all_views"`,
            `"centroid_to_centroid"`.
        sv_loss_type: `"nuclear"` (minus the sum of singular values, default [I]), `"log"`, `"whitening"`.
        brownian_noise: Random directions `"per_sample"` (every view of every image, default [I]), `"per_image"`,
            `"per_batch"`.
        brownian_unit: Normalise the Gaussian directions to unit length (default [I]).
        regularize_on: Embedding the two dispersive losses act on: online `"prediction"` (default [I]) or
            `"projection"`.
        lr_scale_with_views: Multiply the peak learning rate by K (supplement: max lr = base x batch / 256 x K).
    """

    model_type = "ssl_msbreg"

    proj_hidden_dim: int = 512
    proj_out_dim: int = 128
    pred_hidden_dim: int = 512
    augmentation: Literal["byol", "symmetric"] = "symmetric"
    num_views: int = 4
    lambda_s: float = 0.004
    lambda_b: float = 0.5
    centroid_mode: Literal["leave_one_out", "all_views", "centroid_to_centroid"] = "leave_one_out"
    sv_loss_type: Literal["nuclear", "log", "whitening"] = "nuclear"
    brownian_noise: Literal["per_sample", "per_image", "per_batch"] = "per_sample"
    brownian_unit: bool = True
    regularize_on: Literal["prediction", "projection"] = "prediction"
    lr_scale_with_views: bool = True

    def validate_msbreg(self):
        if self.num_views < 2:
            raise ValueError(f"num_views must be >= 2, got {self.num_views}")
        if min(self.lambda_s, self.lambda_b) < 0:
            raise ValueError(f"lambda_s and lambda_b must be >= 0, got {self.lambda_s}, {self.lambda_b}")

    @property
    def learning_rate_multiplier(self) -> float:
        """Factor on the scaled peak learning rate: K with `lr_scale_with_views`."""
        return float(self.num_views) if self.lr_scale_with_views else 1.0
