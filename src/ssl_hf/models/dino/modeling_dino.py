"""DINO: a student ViT matches the centred, sharpened output of its EMA teacher on other crops of the same image."""

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import ViTModel
from transformers.modeling_outputs import ModelOutput

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
    """DINO pre-training of a stock `ViTModel`.

    Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in Self-Supervised Vision
    Transformers", ICCV 2021. Reference: https://github.com/facebookresearch/dino.

    Student = `backbone` (`ViTModel`, cls token after the final norm) + `head` (`DINOHead`); teacher =
    `teacher_backbone` + `teacher_head`, frozen EMA copies. The student sees all crops, one batched call per
    resolution (the global crops at the backbone's size, the local crops with interpolated position embeddings); the
    teacher sees the 2 global crops. `post_optimizer_step` updates the teacher (cosine momentum 0.996 -> 1), the
    centre and the schedules (teacher temperature warm-up, frozen last layer). The **teacher** backbone is exported.

    Differences from the reference:
        - No stochastic depth: transformers' `ViTModel` has no drop-path (DINO's student uses 0.1); D1 keeps the stock
          model so the export is a plain `ViTModel`.
        - Schedules (teacher-temperature warm-up, frozen last layer) are fractions of the run, not epochs [I].
        - The centre is updated after the optimiser step from the mean teacher output of all micro-batches of the
          step (DINO updates it in the loss, once per step without accumulation); identical without accumulation.
    """

    config_class = DINOConfig
    base_model_prefix = "dino"
    _no_split_modules = ["ViTEmbeddings", "ViTLayer"]
    _export_backbone = "teacher_backbone"
    _student_modules = ("backbone", "head")

    def __init__(self, config: DINOConfig):
        super().__init__(config)
        self.backbone = ViTModel(config.backbone_config, add_pooling_layer=False)
        self.head = DINOHead.from_config(config, config.backbone_config.hidden_size, config.out_dim)
        self._register_schedules({"center": config.out_dim})
        self._finish_init()

    def _logits(self, backbone: ViTModel, head: DINOHead, crops: Tensor, freeze_last_layer: bool = False) -> Tensor:
        cls = backbone(pixel_values=crops, interpolate_pos_encoding=True).last_hidden_state[:, 0]
        return head(cls, freeze_last_layer=freeze_last_layer)

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
