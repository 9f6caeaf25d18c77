"""What every `<M>PreTrainedModel` shares: the model contract of DESIGN D3."""

from functools import partial, reduce

import torch
from torch import nn
from transformers import PreTrainedModel, ViTModel

from .layers.mae_decoder import MAEDecoder
from .layers.vit import init_mae_style


class SSLPreTrainedModel(PreTrainedModel):
    """Base of every pre-training model.

    Subclasses set `_export_backbone` (dotted path of the encoder that `ssl-hf export` saves) and
    `_fixed_parameters` (parameters that never train, e.g. sin-cos tables). transformers re-creates parameters with
    `requires_grad=True` when loading, so `from_pretrained` re-freezes them.
    """

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _export_backbone: str = "backbone"
    _fixed_parameters: tuple[str, ...] = ()

    def freeze_fixed_parameters(self) -> None:
        """Sets `requires_grad=False` on every parameter named in `_fixed_parameters`."""
        for name in self._fixed_parameters:
            self.get_parameter(name).requires_grad_(False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, then re-freezes the fixed parameters."""
        model = super().from_pretrained(*args, **kwargs)
        if isinstance(model, tuple):  # output_loading_info=True
            model[0].freeze_fixed_parameters()
        else:
            model.freeze_fixed_parameters()
        return model

    def prepare_for_pretraining(self, resumed: bool) -> None:
        """Called by the training loop once, before training: load frozen helpers, initialise from them (no-op).

        Args:
            resumed: The run continues from a checkpoint (its weights are loaded afterwards).
        """

    def post_optimizer_step(self, step: int, max_steps: int) -> None:
        """Updates EMA teachers, centres and schedules after each optimiser step (no-op by default).

        Args:
            step: Optimiser steps done so far (1 after the first step).
            max_steps: Total optimiser steps of the run.
        """

    def get_export_backbone(self) -> nn.Module:
        """Returns the encoder that `ssl-hf export` saves."""
        return reduce(getattr, self._export_backbone.split("."), self)


class MaskedAutoencoderPreTrainedModel(SSLPreTrainedModel):
    """Shared plumbing of MAE-style models: a stock `ViTModel` encoder and an `MAEDecoder`, with MAE's initialisation.

    Subclasses call `_build_encoder_decoder(config)`, add their own modules, then `_finish_init()`.
    """

    _no_split_modules = ["ViTEmbeddings", "ViTLayer"]
    _fixed_parameters = ("backbone.embeddings.position_embeddings", "decoder.decoder_pos_embed")

    @torch.no_grad()
    def _init_weights(self, module):
        init_mae_style(module, self.config.backbone_config.initializer_range)

    def _build_encoder_decoder(self, config) -> None:
        self.backbone = ViTModel(config.backbone_config, add_pooling_layer=False)
        self.decoder = MAEDecoder(
            config.backbone_config,
            config.decoder_hidden_size,
            config.decoder_num_hidden_layers,
            config.decoder_num_attention_heads,
            config.decoder_intermediate_size,
        )

    def _finish_init(self) -> None:
        self.post_init()
        # post_init initialises a nested PreTrainedModel with its own `_init_weights`: apply MAE's init to the encoder
        # (`transformers.initialization` functions skip tensors loaded from a checkpoint).
        self.backbone.apply(partial(init_mae_style, initializer_range=self.config.backbone_config.initializer_range))
        self.freeze_fixed_parameters()
