"""SelfPatch configuration."""

from huggingface_hub.dataclasses import strict

from ...configuration_base import SelfDistillationConfig


@strict
class SelfPatchConfig(SelfDistillationConfig):
    """Configuration of `SelfPatchForPreTraining`.

    Yun, Lee, Kim, Shin, "Patch-level Representation Learning for Self-supervised Vision Transformers", CVPR 2022.

    The DINO fields (`SelfDistillationConfig`) keep DINO's defaults except the crop-scale split (0.25, SelfPatch's
    code). `out_dim` is the image head's K (65536 on ImageNet, 4096 on COCO). The backbone is a ViT (the paper's) or,
    off-paper [I], a `ResNetConfig` / `SmallStemResNetConfig` whose last-stage positions are the patch tokens (global
    crops of `image_size`).

    Args:
        patch_out_dim: Prototypes of the patch head (4096).
        use_patch_loss: Add the patch-level loss (False: DINO with class-attention pooling; no patch head is built).
        patch_loss_weight: lambda of `L = L_img + lambda L_patch` (0.1).
        num_neighbors_k: Neighbours kept per patch, the most cosine-similar in the teacher's features (4).
        neighborhood_size: Side of the candidate window around each patch (3: 8 candidates).
        wrap_neighbors: Wrap the window around the grid borders (the code's behaviour: always 8 candidates). False
            masks positions outside the grid; a corner then has 3 candidates and never selects a missing one.
        num_aggregation_blocks: Class-attention blocks of the aggregation module (2).
        center_includes_local_crops: The image centre averages the teacher outputs of all crops (the code) rather than
            the 2 global crops only (DINO).
        backbone_cls_token: ViT only. False (faithful): the backbone has no cls token; it is a stock
            `SiglipVisionModel` (patch tokens only, learned interpolable positions, final LayerNorm = the aggregation's
            norm) and exports as one. True: a stock `ViTModel` whose cls token joins the attention but is never used
            by the losses; it exports as a `ViTModel`.
        use_position_embeddings: ViT only. Learned position embeddings (Supp. Tab. 4 ablates them; False keeps them at
            zero).
    """

    model_type = "ssl_selfpatch"

    global_crop_min_scale: float = 0.25
    patch_out_dim: int = 4096
    use_patch_loss: bool = True
    patch_loss_weight: float = 0.1
    num_neighbors_k: int = 4
    neighborhood_size: int = 3
    wrap_neighbors: bool = True
    num_aggregation_blocks: int = 2
    center_includes_local_crops: bool = True
    backbone_cls_token: bool = False
    use_position_embeddings: bool = True

    def validate_selfpatch(self):
        if self.patch_out_dim < 1 or self.num_aggregation_blocks < 1:
            raise ValueError("patch_out_dim and num_aggregation_blocks must be >= 1")
        if self.patch_loss_weight < 0:
            raise ValueError(f"patch_loss_weight must be >= 0, got {self.patch_loss_weight}")
        if self.neighborhood_size < 3 or self.neighborhood_size % 2 == 0:
            raise ValueError(f"neighborhood_size must be an odd number >= 3, got {self.neighborhood_size}")
        candidates = self.neighborhood_size**2 - 1
        if not 1 <= self.num_neighbors_k <= candidates:
            raise ValueError(
                f"num_neighbors_k must be in [1, {candidates}] for a {self.neighborhood_size}x"
                f"{self.neighborhood_size} window, got {self.num_neighbors_k}"
            )
