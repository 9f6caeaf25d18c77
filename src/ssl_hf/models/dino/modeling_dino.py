"""DINO: a student network matches the centred, sharpened output of its EMA teacher on other crops of the image."""

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import ModelOutput

from ...backbones import build_backbone, feature_dim, global_features
from ...layers.dino_head import DINOHead
from ...layers.multicrop import crops_by_view
from ...losses.distillation import batch_center, dino_loss
from ...modeling_base import SelfDistillationPreTrainedModel
from .configuration_dino import DINOConfig


@dataclass
class DINOPreTrainingOutput(ModelOutput):
    """Output of `DINOForPreTraining`.

    Args:
        loss: The DINO loss (cross-entropy over every teacher-global / student-crop pair of different crops).
        student_logits: `(V, B, K)` student outputs of all crops, the two global crops first.
        teacher_logits: `(2, B, K)` teacher outputs of the global crops.
    """

    loss: Tensor | None = None
    student_logits: Tensor | None = None
    teacher_logits: Tensor | None = None


class DINOForPreTraining(SelfDistillationPreTrainedModel):
    """DINO pre-training of a stock `ViTModel` or `ResNetModel`.

    Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in Self-Supervised Vision
    Transformers", ICCV 2021. Reference: https://github.com/facebookresearch/dino (`main_dino.py` at 04c0ad9).

    Student = `backbone` + `head` (`DINOHead` on the global feature: a `ViTModel`'s cls token after the final norm,
    or, as the reference's torchvision ResNets with `fc` replaced by the identity, a `ResNetModel`'s average-pooled
    last stage); teacher = `teacher_backbone` + `teacher_head`, frozen EMA copies. The student sees all crops, one
    batched call per resolution (the global crops at `config.input_size`; the local crops at their own size, with
    interpolated position embeddings for a ViT, pooled for a ResNet); the teacher sees the 2 global crops.
    `post_optimizer_step` updates the teacher (cosine momentum 0.996 -> 1), the centre and the schedules (teacher
    temperature warm-up, frozen last layer). The EMA covers parameters; a ResNet teacher's BatchNorm statistics come
    from its own passes over the global crops, as in the reference (whose teacher also stays in train mode). The
    **teacher** backbone is exported (a ResNet as itself).

    Differences from the reference:
        - No stochastic depth: transformers' `ViTModel` has no drop-path (DINO's student uses 0.1); D1 keeps the stock
          model so the export is a plain `ViTModel`.
        - ResNets: BatchNorm statistics are per process. The reference converts student and teacher BatchNorms to
          `SyncBatchNorm` for multi-GPU runs; ssl_hf's loop does not (as for BYOL); with your own multi-GPU loop,
          apply `torch.nn.SyncBatchNorm.convert_sync_batchnorm` to the model before `accelerator.prepare`.
        - Schedules (teacher-temperature warm-up, frozen last layer) are fractions of the run, not epochs [I].
        - The centre is updated after the optimiser step from the mean teacher output of all micro-batches of the
          step (DINO updates it in the loss, once per step without accumulation); identical without accumulation.
    """

    config_class = DINOConfig
    base_model_prefix = "dino"
    _no_split_modules = ["ViTEmbeddings", "ViTLayer", "ResNetStage"]
    _export_backbone = "teacher_backbone"
    _student_modules = ("backbone", "head")

    def __init__(self, config: DINOConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.head = DINOHead.from_config(config, feature_dim(config.backbone_config), config.out_dim)
        self._register_schedules({"center": config.out_dim})
        self._finish_init()

    def _logits(self, backbone: nn.Module, head: DINOHead, crops: Tensor, freeze_last_layer: bool = False) -> Tensor:
        features = global_features(backbone, crops, interpolate_pos_encoding=True)  # (N, D), any crop size
        return head(features, freeze_last_layer=freeze_last_layer)

    def forward(
        self, pixel_values: Tensor, local_pixel_values: Tensor | None = None, return_dict: bool = True
    ) -> DINOPreTrainingOutput | tuple:
        """Computes the DINO loss of a batch of multi-crop views.

        Args:
            pixel_values: `(B, 2, C, S, S)` the two global crops of each image.
            local_pixel_values: `(B, n, C, s, s)` local crops, or None.
            return_dict: Return a `ModelOutput` (else a tuple).
        """
        batch = pixel_values.shape[0]
        global_crops = crops_by_view(pixel_values)
        frozen = self.last_layer_frozen()
        student = [self._logits(self.backbone, self.head, global_crops, frozen)]
        if local_pixel_values is not None and local_pixel_values.shape[1] > 0:
            student.append(self._logits(self.backbone, self.head, crops_by_view(local_pixel_values), frozen))
        student_logits = torch.cat(student).unflatten(0, (-1, batch))
        with torch.no_grad():
            teacher_logits = self._logits(self.teacher_backbone, self.teacher_head, global_crops)
            teacher_logits = teacher_logits.unflatten(0, (-1, batch))
        loss = dino_loss(
            student_logits, teacher_logits, self.center, self.teacher_temperature(), self.config.student_temp
        )
        self._accumulate_center("center", batch_center(teacher_logits))
        out = DINOPreTrainingOutput(loss=loss, student_logits=student_logits, teacher_logits=teacher_logits)
        return out if return_dict else out.to_tuple()
