"""TEC: a new ViT learns, MAE-style, to predict the patch features and semantic attention of a pretrained base model."""

import copy
import logging
import math
import os
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import ViTModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput

from ...layers.mae_decoder import block_style, fill_hidden_patches, vit_block
from ...layers.masking import MaskSample
from ...layers.pos_embed import sincos_2d
from ...layers.vit import encode_visible, init_mae_style
from ...losses.reconstruction import masked_mse
from ...modeling_base import MaskedAutoencoderPreTrainedModel
from .base_model import (
    BaseModelInfo,
    BaseModelTargets,
    gather_rows,
    load_base_encoder,
    read_base_config,
    split_heads,
)
from .configuration_tec import TECConfig


logger = logging.getLogger(__name__)


@dataclass
class TECPreTrainingOutput(ModelOutput):
    """Output of `TECForPreTraining`.

    Args:
        loss: Weighted sum of the two losses.
        loss_feature: MSE to the normalised base-model features, on hidden patches.
        loss_attention: Cross-entropy to the base model's attention rows (0 without the attention target).
        logits: `(B, L, C_t)` predicted patch features.
        attention_logits: `(B, H_t, R, L)` predicted attention logits of the target rows.
        mask: `(B, L)` bool, True = hidden.
        restore_indices: `(B, L)` un-shuffle permutation.
    """

    loss: Tensor | None = None
    loss_feature: Tensor | None = None
    loss_attention: Tensor | None = None
    logits: Tensor | None = None
    attention_logits: Tensor | None = None
    mask: Tensor | None = None
    restore_indices: Tensor | None = None


class EncoderAdapter(nn.Module):
    """TEC's encoder adapter: LayerNorm over all block outputs, then per group of blocks FC + residual MLP, summed.

    Args:
        hidden_size: Encoder width C.
        num_layers: Encoder depth D (the number of inputs).
        group_size: Consecutive blocks per group (D / group_size groups).
        intermediate_size: Hidden width of each group's MLP.
        eps: LayerNorm epsilon.
    """

    def __init__(self, hidden_size: int, num_layers: int, group_size: int, intermediate_size: int, eps: float):
        super().__init__()
        self.group_width = group_size * hidden_size
        self.norm_in = nn.LayerNorm(num_layers * hidden_size, eps=eps)
        groups = num_layers // group_size
        self.group_proj = nn.ModuleList(nn.Linear(self.group_width, hidden_size) for _ in range(groups))
        self.group_mlp = nn.ModuleList(
            nn.Sequential(
                nn.Linear(hidden_size, intermediate_size), nn.GELU(), nn.Linear(intermediate_size, hidden_size)
            )
            for _ in range(groups)
        )
        self.norm_out = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, block_outputs: list[Tensor]) -> Tensor:
        """`D x (B, N, C)` (the last one after the encoder's final norm) -> `(B, N, C)`."""
        chunks = self.norm_in(torch.cat(block_outputs, dim=-1)).split(self.group_width, dim=-1)
        fused = 0
        for chunk, proj, mlp in zip(chunks, self.group_proj, self.group_mlp):
            z = proj(chunk)
            fused = fused + z + mlp(z)
        return self.norm_out(fused)


class TECDecoder(nn.Module):
    """The shared multi-target decoder: per-target input projection and mask token, shared blocks, per-target heads.

    Both targets run through the shared blocks in one batched call (`2B` sequences), which equals two calls.

    Args:
        config: The `TECConfig`.
    """

    def __init__(self, config: TECConfig):
        super().__init__()
        enc, width = config.backbone_config, config.decoder_hidden_size
        self.with_attention = config.use_attention_target
        self.feature_embed = nn.Linear(enc.hidden_size, width)
        self.feature_mask_token = nn.Parameter(torch.zeros(1, 1, width))
        if self.with_attention:
            self.attention_embed = nn.Linear(enc.hidden_size, width)
            self.attention_mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_pos_embed = nn.Parameter(sincos_2d(width, enc.image_size // enc.patch_size), requires_grad=False)
        self.decoder_layers = nn.ModuleList(
            vit_block(width, config.decoder_num_attention_heads, config.decoder_intermediate_size, **block_style(enc))
            for _ in range(config.decoder_num_hidden_layers)
        )
        self.feature_norm = nn.LayerNorm(width, eps=enc.layer_norm_eps)
        self.feature_head = nn.Linear(width, config.target_hidden_size)
        if self.with_attention:
            self.attention_norm = nn.LayerNorm(width, eps=enc.layer_norm_eps)
            self.attention_head = nn.Linear(width, 2 * config.target_hidden_size)  # [query, key]

    def forward(self, latent: Tensor, restore_indices: Tensor) -> tuple[Tensor, Tensor | None]:
        """`(B, 1 + L_keep, C)` encoder latent -> features `(B, L, C_t)`, query-key `(B, 1 + L, 2 C_t)` or None."""
        streams = [fill_hidden_patches(self.feature_embed(latent), self.feature_mask_token, restore_indices)]
        if self.with_attention:
            streams.append(
                fill_hidden_patches(self.attention_embed(latent), self.attention_mask_token, restore_indices)
            )
        x = torch.cat(streams, dim=0) + self.decoder_pos_embed
        for layer in self.decoder_layers:
            x = layer(x, None)
        x = x.split(latent.shape[0], dim=0)
        features = self.feature_head(self.feature_norm(x[0]))[:, 1:]
        query_key = self.attention_head(self.attention_norm(x[1])) if self.with_attention else None
        return features, query_key


class TECPreTrainedModel(MaskedAutoencoderPreTrainedModel):
    """Base class: MAE initialisation for the encoder, adapters and decoder."""

    config_class = TECConfig
    base_model_prefix = "tec"

    @torch.no_grad()
    def _init_weights(self, module):
        init_mae_style(module, self.config.backbone_config.initializer_range)
        if isinstance(module, TECDecoder):
            for name in ("feature_mask_token", "attention_mask_token"):
                if hasattr(module, name):
                    init.normal_(getattr(module, name), std=self.config.backbone_config.initializer_range)
            table = module.decoder_pos_embed
            init.copy_(table, sincos_2d(table.shape[-1], math.isqrt(table.shape[1] - 1)).to(table.dtype))

    def _build_encoder(self, config: TECConfig) -> None:
        """The new ViT and its two adapters (the part `TECModel` keeps)."""
        enc = config.backbone_config
        self.backbone = ViTModel(enc, add_pooling_layer=False)
        self.input_adapter = None
        if config.use_input_adapter:
            width = enc.hidden_size
            self.input_adapter = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.encoder_adapter = None
        if config.use_encoder_adapter:
            self.encoder_adapter = EncoderAdapter(
                enc.hidden_size,
                enc.num_hidden_layers,
                config.adapter_group_size,
                config.adapter_intermediate_size,
                enc.layer_norm_eps,
            )

    def adapted_cls_token(self) -> Tensor:
        """The cls token the encoder sees: the input adapter applied to the cls parameter (or the parameter)."""
        cls = self.backbone.embeddings.cls_token
        return self.input_adapter(cls) if self.input_adapter is not None else cls

    def encode(
        self, pixel_values: Tensor, noise: Tensor | None, mask_ratio: float, interpolate_pos_encoding: bool = False
    ) -> tuple[Tensor, MaskSample]:
        """Visible tokens -> blocks -> encoder adapter (or the final norm): `(B, 1 + L_keep, C)` and the mask."""
        blocks = [] if self.encoder_adapter is not None else None
        latent, sample = encode_visible(
            self.backbone,
            pixel_values,
            noise,
            mask_ratio,
            interpolate_pos_encoding,
            cls_token=self.adapted_cls_token(),
            block_outputs=blocks,
        )
        if self.encoder_adapter is not None:
            latent = self.encoder_adapter([*blocks[:-1], latent])  # the last block enters after the final norm
        return latent, sample


class TECModel(TECPreTrainedModel):
    """The TEC encoder with its adapters, for parameter-efficient fine-tuning (`ssl-hf export --keep_adapters`).

    `last_hidden_state` is the encoder adapter's fusion of all blocks (the final-norm output without the encoder
    adapter), computed on all patches with the input adapter feeding the cls token; `pooler_output` is its cls row.
    TEC Tab. 3/8 tune the input adapter (and the encoder adapter) on top of the frozen or fine-tuned encoder. Loads
    with `AutoModel` after `import ssl_hf`; the plain export (`ssl-hf export`) needs no ssl_hf at all.
    """

    _fixed_parameters = ("backbone.embeddings.position_embeddings",)

    def __init__(self, config: TECConfig):
        super().__init__(config)
        self._build_encoder(config)
        self.post_init()
        self.backbone.apply(partial(init_mae_style, initializer_range=config.backbone_config.initializer_range))
        self.freeze_fixed_parameters()

    def forward(
        self, pixel_values: Tensor, interpolate_pos_encoding: bool = False, return_dict: bool = True
    ) -> BaseModelOutputWithPooling | tuple:
        B, _, H, W = pixel_values.shape
        p = self.config.backbone_config.patch_size
        in_order = torch.arange((H // p) * (W // p), device=pixel_values.device, dtype=torch.float32).expand(B, -1)
        hidden, _ = self.encode(pixel_values, in_order, 0.0, interpolate_pos_encoding)
        out = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=hidden[:, 0])
        return out if return_dict else out.to_tuple()


class TECForPreTraining(TECPreTrainedModel):
    """TEC pre-training: a new ViT, masked as in MAE, predicts what a frozen base model computes on the full image.

    Gao, Zhou, Cheng, Yan. "Towards Sustainable Self-supervised Learning", arXiv 2210.11016.
    Reference code: https://github.com/sail-sg/TEC (`models/models_tec_vit.py`, `models/basemodel_vit.py`).

    Targets (from the base model, no gradient): the average of its last 2 blocks' patch outputs (before its final
    norm), normalised over the patches of each image and channel; and its last block's attention logits for the cls
    row and the top-k patches the cls token attends to most, softened by tau. The new model has an input adapter (an
    MLP on its cls parameter) and an encoder adapter (groups of blocks fused), used only during pre-training; the
    export folds the input adapter into the cls token and drops the rest, leaving a plain `ViTModel`.

    The base model is not a sub-module: it is not trained, saved, checkpointed or wrapped for distribution. It is
    loaded from `config.base_model` on first use (or given as `base_model=`), moved to the input's device, and run
    in eval mode under `torch.no_grad()`.

    Differences from the reference:
        - The two decoder passes run as one batched call through the shared blocks (mathematically identical).
        - The feature and attention targets and both softmaxes are computed in float32 under mixed precision [I].
        - Attention logits of the base model are recomputed from its last attention block's input with its own
          query/key projections (hooks), so SDPA/flash kernels work; the reference forks the attention code.
        - Ablation switches the released code lacks: `use_encoder_adapter=False` feeds the final-norm output to
          the decoder, `attention_target_mode` `cls_only` / `all` select those rows (Tab. 11b/11e) [I].
        - Base and new model may differ in size: the heads predict the base model's width and heads [I].
        - The encoder adapter's LayerNorms use the backbone's epsilon (1e-6) [I].
    """

    def __init__(self, config: TECConfig, base_model: nn.Module | None = None):
        super().__init__(config)
        self._base_targets: BaseModelTargets | None = None
        if base_model is not None:
            encoder = base_model.get_export_backbone() if hasattr(base_model, "get_export_backbone") else base_model
            self._base_targets = BaseModelTargets(encoder, config.teacher_last_layers)  # freezes it
            self._record_base(self._base_targets.info)
        elif config.base_model is None:
            raise ValueError(
                "TEC learns from a pretrained base model: set TECConfig.base_model (--base_model PATH_OR_ID) to an "
                "`ssl-hf export` folder, a transformers ViT/ViTMAE/DINOv2 checkpoint, a run's final/ folder or an "
                "official MAE/iBOT/DINO/TEC .pth file."
            )
        elif os.path.exists(config.base_model):  # record where it is, so a resume from another folder finds it
            config.base_model = os.path.abspath(config.base_model)
        if base_model is None and config.base_hidden_size is None:
            # read only the base model's config; its weights are loaded on first use
            self._record_base(
                BaseModelInfo.from_config(read_base_config(config.base_model, config.base_model_revision))
            )
        self._build_encoder(config)
        self.decoder = TECDecoder(config)
        self._finish_init()

    def _record_base(self, info: BaseModelInfo) -> None:
        info.check_student(self.config.backbone_config, f"The base model '{self.config.base_model}'")
        for field in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
            recorded = getattr(self.config, f"base_{field}")
            if recorded is not None and recorded != getattr(info, field):
                raise ValueError(
                    f"The base model has {field}={getattr(info, field)} but this model was built for "
                    f"{recorded}: it is not the base model this run started with ({self.config.base_model})."
                )
            setattr(self.config, f"base_{field}", getattr(info, field))
        if self.config.teacher_last_layers > info.num_hidden_layers:
            raise ValueError(
                f"teacher_last_layers={self.config.teacher_last_layers} but the base model has "
                f"{info.num_hidden_layers} blocks."
            )

    @property
    def base_targets(self) -> BaseModelTargets:
        """The frozen base model, loaded from `config.base_model` on first use."""
        if self._base_targets is None:
            source = self.config.base_model
            if source is None:
                raise ValueError("config.base_model is not set: TECForPreTraining needs its base model to train.")
            if not os.path.exists(source) and os.path.isabs(source):
                raise FileNotFoundError(
                    f"The base model of this run, {source}, does not exist on this machine. Copy it there, or set "
                    "config.base_model (--base_model) to where it is now."
                )
            logger.info("Loading TEC base model %s", source)
            targets = BaseModelTargets(
                load_base_encoder(source, self.config.base_model_revision), self.config.teacher_last_layers
            )
            self._record_base(targets.info)
            self._base_targets = targets
        return self._base_targets

    def prepare_for_pretraining(self, resumed: bool) -> None:
        """Loads the base model before training (fail fast), and with `init_from_base` copies its weights in."""
        base = self.base_targets
        if self.config.init_from_base and not resumed:
            if base.info.model_type == "dinov2":
                raise ValueError("init_from_base needs a ViT or ViTMAE base model (DINOv2 blocks differ from ViT's).")
            state = {k: v for k, v in base.encoder.state_dict().items() if not k.startswith("pooler.")}
            result = self.backbone.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(f"init_from_base: the base model's weights do not fit the new encoder: {result}")
            self.freeze_fixed_parameters()

    def get_adapter_model(self) -> TECModel:
        """The encoder with both adapters as a `TECModel` (decoder dropped), for `ssl-hf export --keep_adapters`."""
        model = TECModel(self.config)
        result = model.load_state_dict(self.state_dict(), strict=False)
        if result.missing_keys:
            raise RuntimeError(f"TECModel misses {result.missing_keys}")
        return model.eval()

    def get_export_backbone(self) -> ViTModel:
        """A plain `ViTModel` with the input adapter folded into its cls token (exactly the adapter path)."""
        encoder = copy.deepcopy(self.backbone)
        with torch.no_grad():
            encoder.embeddings.cls_token.copy_(self.adapted_cls_token())
        return encoder

    def forward(
        self,
        pixel_values: Tensor,
        noise: Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool = True,
    ) -> TECPreTrainingOutput | tuple:
        config = self.config
        base = self.base_targets
        if base.device != pixel_values.device:
            base.to(pixel_values.device)
        targets = base(
            pixel_values,
            target_norm=config.target_norm,
            attention_mode=config.attention_target_mode if config.use_attention_target else None,
            topk=config.attention_topk,
            tau=config.attention_tau,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )
        latent, sample = self.encode(pixel_values, noise, config.mask_ratio, interpolate_pos_encoding)
        features, query_key = self.decoder(latent, sample.restore_indices)
        loss_feature = masked_mse(features.float(), targets.features, sample.mask)
        attention_logits = None
        loss_attention = torch.zeros((), device=loss_feature.device)
        if query_key is not None:
            attention_logits = self._attention_logits(query_key, targets.rows)
            loss_attention = -(targets.attention_probs * F.log_softmax(attention_logits, dim=-1)).sum(-1).mean()
        loss = config.loss_weight_feature * loss_feature + config.loss_weight_attention * loss_attention
        out = TECPreTrainingOutput(
            loss=loss,
            loss_feature=loss_feature,
            loss_attention=loss_attention,
            logits=features,
            attention_logits=attention_logits,
            mask=sample.mask,
            restore_indices=sample.restore_indices,
        )
        return out if return_dict else out.to_tuple()

    def _attention_logits(self, query_key: Tensor, rows: Tensor) -> Tensor:
        """Predicted logits `(B, H_t, R, L)` of the target rows over the patch keys (cls key dropped), in float32."""
        heads, width = self.config.target_num_heads, self.config.target_hidden_size
        q, k = (split_heads(t, heads).float() for t in query_key.split(width, dim=-1))
        scale = width**-0.5 if self.config.attention_scale == "full" else (width // heads) ** -0.5
        return (gather_rows(q, rows) @ k[:, :, 1:].transpose(-1, -2)) * scale
