"""SelfPatch: DINO plus patch-level self-distillation against each patch's most similar neighbours."""

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import SiglipVisionModel, ViTModel
from transformers.modeling_outputs import ModelOutput

from ...backbones import build_backbone, cls_free_vit_config, feature_dim, is_resnet
from ...layers.dino_head import DINOHead
from ...layers.multicrop import crops_by_view
from ...losses.distillation import batch_center, dino_loss, patch_distillation_loss
from ...modeling_base import SelfDistillationPreTrainedModel
from .aggregation import SelfPatchAggregation, neighbor_index, top_neighbors
from .configuration_selfpatch import SelfPatchConfig


@dataclass
class SelfPatchPreTrainingOutput(ModelOutput):
    """Output of `SelfPatchForPreTraining`.

    Args:
        loss: `loss_image + patch_loss_weight * loss_patch`.
        loss_image: DINO loss on the aggregated image tokens.
        loss_patch: Patch loss (None without `use_patch_loss`).
        student_logits: `(V, B, K)` student image outputs of all crops, the 2 global crops first.
        teacher_logits: `(V', B, K)` teacher image outputs (V' = V when the teacher runs on all crops, else 2).
    """

    loss: Tensor | None = None
    loss_image: Tensor | None = None
    loss_patch: Tensor | None = None
    student_logits: Tensor | None = None
    teacher_logits: Tensor | None = None


@dataclass
class _CropOutputs:
    image: Tensor  # (G, B, K)
    patch: Tensor | None  # (G, B, N, K_patch)


class SelfPatchForPreTraining(SelfDistillationPreTrainedModel):
    """SelfPatch pre-training: `L = L_DINO(image tokens) + lambda L_patch`.

    Yun, Lee, Kim, Shin. "Patch-level Representation Learning for Self-supervised Vision Transformers", CVPR 2022.
    Reference: https://github.com/alinlab/SelfPatch (read in full; the main paper was not available, the supplement
    was).

    Student = `backbone` + `aggregation` (a query token and class-attention blocks) + `head` (image) + `patch_head`;
    teacher = EMA copies of all four. For every crop group (the 2 global crops, then the local crops; one batched call
    each) the student's image token is class attention over its patch tokens, and each of its patch tokens (after the
    final LayerNorm) goes through the patch head. The teacher, on **all** crops, ranks each patch's 8 neighbours (3x3
    window, wrap-around) by cosine similarity of its raw last-block tokens, keeps the top k and summarises them with
    its aggregation module; the student's patch i must match the teacher's summary of patch i's neighbours in the same
    crop (own centre, same temperatures). The image loss is DINO's on the aggregated image tokens. The **teacher**
    backbone is exported; with the default cls-free backbone (a stock `SiglipVisionModel`) its `last_hidden_state` is
    the LayerNorm-ed patch tokens the patch head was trained on.

    Differences from the reference:
        - No stochastic depth (the reference student uses drop-path 0.1): the stock backbones have none (D1).
        - `backbone_cls_token=False` (default) builds the backbone as transformers' `SiglipVisionModel` (a ViT without
          cls token) with the aggregation's LayerNorm as its final `post_layernorm` (identical computation);
          `backbone_cls_token=True` uses a `ViTModel` whose cls token is in the sequence but unused, which is not the
          paper's model (spec open question 6).
        - The export holds the teacher backbone (+ its final norm); the aggregation module (a natural image pooler
          for linear evaluation, [I] in the spec) is not exported: no stock transformers model has class-attention
          pooling. Use the mean of `last_hidden_state` as the image feature.
        - Schedules as fractions of the run, centre updates after the optimiser step: as `DINOForPreTraining`.
        - The similarity tensor keeps explicit shapes (the code's `.squeeze()` breaks at batch size 1).
        - Off-paper [I]: a ResNet backbone (the `selfpatch-cpu` preset's, as DINO's ResNet rows). Its last-stage
          positions are the patch tokens (a 32-px crop through the small-stem ResNet-18 gives a 4x4 grid, as 8-px
          patches of a ViT), a LayerNorm of the student's (EMA-copied to the teacher) stands for the ViT's final
          norm, and the aggregation uses 64-wide attention heads. The exported ResNet's feature is its average-pooled
          last stage (the mean of the patch tokens before the norm).
    """

    config_class = SelfPatchConfig
    base_model_prefix = "selfpatch"
    _no_split_modules = ["ViTEmbeddings", "ViTLayer", "SiglipEncoderLayer", "ResNetStage", "ClassAttentionBlock"]
    _export_backbone = "teacher_backbone"

    def __init__(self, config: SelfPatchConfig):
        super().__init__(config)
        bb = config.backbone_config
        dim = feature_dim(bb)
        modules = ["backbone", "aggregation", "head"]
        if is_resnet(bb):
            self.backbone = build_backbone(bb)
            self.token_norm = nn.LayerNorm(dim, eps=1e-6)  # the ViT's final norm, for the tokens of the last stage
            modules.append("token_norm")
            heads, mlp_ratio, eps = max(1, dim // 64), 4.0, 1e-6
        else:
            if config.backbone_cls_token:
                self.backbone = ViTModel(bb, add_pooling_layer=False)
            else:
                self.backbone = SiglipVisionModel(cls_free_vit_config(bb))
                _init_like_timm(self.backbone, bb.initializer_range)
            heads, mlp_ratio, eps = bb.num_attention_heads, bb.intermediate_size / dim, bb.layer_norm_eps
        self.aggregation = SelfPatchAggregation(dim, heads, config.num_aggregation_blocks, mlp_ratio, eps)
        self.head = DINOHead.from_config(config, dim, config.out_dim)
        centers = {"center": config.out_dim}
        if config.use_patch_loss:
            self.patch_head = DINOHead.from_config(config, dim, config.patch_out_dim)
            modules.append("patch_head")
            centers["patch_center"] = config.patch_out_dim
        self._student_modules = tuple(modules)
        fixed_positions = not (config.use_position_embeddings or is_resnet(bb))
        if fixed_positions:
            with torch.no_grad():
                self._position_table(self.backbone).zero_()
        self._register_schedules(centers)
        self._finish_init()
        if fixed_positions:
            self._fixed_parameters += tuple(
                n for n, p in self.named_parameters() if p is self._position_table(self.backbone)
            )
            self.freeze_fixed_parameters()

    @staticmethod
    def _position_table(backbone: nn.Module) -> nn.Parameter:
        if isinstance(backbone, ViTModel):
            return backbone.embeddings.position_embeddings
        return _vision(backbone).embeddings.position_embedding.weight

    def _tokens(self, prefix: str, crops: Tensor) -> tuple[Tensor, nn.LayerNorm, tuple[int, int]]:
        """Raw last-block patch tokens `(B, N, D)` (before the final norm), the final norm and the token grid.

        `prefix` is "" for the student, "teacher_" for the teacher.
        """
        backbone = getattr(self, f"{prefix}backbone")
        if is_resnet(self.config.backbone_config):
            features = backbone(pixel_values=crops).last_hidden_state  # (B, D, h, w)
            return features.flatten(2).transpose(1, 2), getattr(self, f"{prefix}token_norm"), features.shape[-2:]
        patch = self.config.backbone_config.patch_size
        grid = (crops.shape[-2] // patch, crops.shape[-1] // patch)
        if isinstance(backbone, ViTModel):
            out = backbone(pixel_values=crops, interpolate_pos_encoding=True, output_hidden_states=True)
            return out.hidden_states[-1][:, 1:], backbone.layernorm, grid
        vision = _vision(backbone)
        hidden = vision.embeddings(crops, interpolate_pos_encoding=True)
        return vision.encoder(inputs_embeds=hidden).last_hidden_state, vision.post_layernorm, grid

    def _student(self, crops: Tensor, groups: int, frozen: bool) -> _CropOutputs:
        x, norm, _ = self._tokens("", crops)
        out = norm(torch.cat([self.aggregation.pool(x)[:, None], x], dim=1))
        image = self.head(out[:, 0], freeze_last_layer=frozen).unflatten(0, (groups, -1))
        patch = None
        if self.config.use_patch_loss:
            patch = self.patch_head(out[:, 1:], freeze_last_layer=frozen).unflatten(0, (groups, -1))
        return _CropOutputs(image, patch)

    @torch.no_grad()
    def _teacher(self, crops: Tensor, groups: int) -> _CropOutputs:
        c = self.config
        x, norm, grid = self._tokens("teacher_", crops)
        tokens = [self.teacher_aggregation.pool(x)[:, None]]
        if c.use_patch_loss:
            tokens.append(self._aggregate_neighbors(x, grid))
        out = norm(torch.cat(tokens, dim=1))
        image = self.teacher_head(out[:, 0]).unflatten(0, (groups, -1))
        patch = self.teacher_patch_head(out[:, 1:]).unflatten(0, (groups, -1)) if c.use_patch_loss else None
        return _CropOutputs(image, patch)

    def _aggregate_neighbors(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        c, (height, width) = self.config, grid
        index, valid = neighbor_index(height, width, c.neighborhood_size, c.wrap_neighbors, device=x.device)
        neighbors, chosen_valid = top_neighbors(x, index, valid, c.num_neighbors_k)
        return self.teacher_aggregation.aggregate(x, neighbors, None if c.wrap_neighbors else chosen_valid)

    def forward(
        self, pixel_values: Tensor, local_pixel_values: Tensor | None = None, return_dict: bool = True
    ) -> SelfPatchPreTrainingOutput | tuple:
        """Computes the image and patch losses of a batch of multi-crop views.

        Args:
            pixel_values: `(B, 2, C, S, S)` the two global crops of each image.
            local_pixel_values: `(B, n, C, s, s)` local crops, or None.
            return_dict: Return a `ModelOutput` (else a tuple).
        """
        c = self.config
        groups = [pixel_values]
        if local_pixel_values is not None and local_pixel_values.shape[1] > 0:
            groups.append(local_pixel_values)
        frozen = self.last_layer_frozen()
        teacher_on_locals = c.use_patch_loss or c.center_includes_local_crops
        student, teacher = [], []
        for i, group in enumerate(groups):
            crops = crops_by_view(group)
            student.append(self._student(crops, group.shape[1], frozen))
            if i == 0 or teacher_on_locals:
                teacher.append(self._teacher(crops, group.shape[1]))
        student_logits = torch.cat([s.image for s in student])
        teacher_logits = torch.cat([t.image for t in teacher])
        tau_t = self.teacher_temperature()
        loss_image = dino_loss(student_logits, teacher_logits[:2], self.center, tau_t, c.student_temp)
        center_source = teacher_logits if c.center_includes_local_crops else teacher_logits[:2]
        self._accumulate_center("center", batch_center(center_source))
        loss, loss_patch = loss_image, None
        if c.use_patch_loss:
            loss_patch = patch_distillation_loss(
                [s.patch for s in student], [t.patch for t in teacher], self.patch_center, tau_t, c.student_temp
            )
            loss = loss_image + c.patch_loss_weight * loss_patch
            # the code's patch centre: mean over every teacher patch token of every crop
            tokens = torch.cat([t.patch.flatten(0, 2) for t in teacher])
            self._accumulate_center("patch_center", batch_center(tokens))
        out = SelfPatchPreTrainingOutput(
            loss=loss,
            loss_image=loss_image,
            loss_patch=loss_patch,
            student_logits=student_logits,
            teacher_logits=teacher_logits,
        )
        return out if return_dict else out.to_tuple()


@torch.no_grad()
def _init_like_timm(backbone: SiglipVisionModel, std: float) -> None:
    """The ViT init of timm (SelfPatch's backbone): trunc_normal(std) linear weights and position table, zero biases."""
    for module in backbone.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
    nn.init.trunc_normal_(_vision(backbone).embeddings.position_embedding.weight, std=std)


def _vision(backbone: SiglipVisionModel) -> nn.Module:
    """The module holding `embeddings`, `encoder` and `post_layernorm` (the model itself in transformers 5)."""
    return getattr(backbone, "vision_model", backbone)
