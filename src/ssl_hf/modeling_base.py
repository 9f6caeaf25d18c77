"""What every `<M>PreTrainedModel` shares: the model contract of DESIGN D3."""

import copy
from functools import partial, reduce

import torch
from accelerate.utils import reduce as reduce_across_processes
from torch import Tensor, nn
from transformers import PreTrainedModel, ViTModel

from .layers.ema import cosine_momentum, ema_update_
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

    def restart_schedules(self) -> None:
        """Called after `--init_from` loaded a saved model into a new run: schedule state restarts at step 0 (no-op).

        Learnt state (weights, teachers, centres) is kept; only what measures the progress of the old run is reset.
        """

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate factors by parameter-name prefix for the optimiser (`param_groups`); none by default."""
        return {}

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


class SelfDistillationPreTrainedModel(SSLPreTrainedModel):
    """Shared plumbing of DINO-style models: an EMA teacher, running centres of its outputs and the schedules.

    Subclasses build their student modules, list them in `_student_modules`, call `_finish_init()` (which copies the
    student into frozen `teacher_<name>` modules) and, in `forward`, call `_accumulate_center(name, logits)` for each
    centre in `_centers`. `post_optimizer_step` then updates the teacher (cosine momentum from `ema_base` to 1), every
    centre (`c <- m c + (1 - m) mean`, the mean over all micro-batches of the step and all processes) and the training
    progress that drives the teacher temperature and the frozen last layer. Centres and progress are persistent
    buffers, so checkpoints resume exactly.
    """

    _student_modules: tuple[str, ...] = ()
    _centers: tuple[str, ...] = ("center",)

    def _init_weights(self, module):
        """Heads initialise themselves (trunc_normal 0.02, as DINO); the backbone keeps transformers' init.

        ViT: trunc_normal 0.02, as DINO's; ResNet: kaiming conv weights and BatchNorm 1 / 0, as torchvision's.
        """

    def _register_schedules(self, center_dims: dict[str, int]) -> None:
        for name, dim in center_dims.items():
            self.register_buffer(name, torch.zeros(dim))
        self.register_buffer("progress", torch.zeros(()))  # optimiser steps done / total steps
        # running sum and count of the micro-batch means since the last optimiser step (constant memory)
        self._pending: dict[str, tuple[Tensor | None, int]] = dict.fromkeys(center_dims, (None, 0))

    def _finish_init(self) -> None:
        self.post_init()
        for name in self._student_modules:
            setattr(self, f"teacher_{name}", copy.deepcopy(getattr(self, name)))
        self._fixed_parameters = tuple(
            name
            for name, p in self.named_parameters()
            if name.startswith("teacher_") or (name.endswith("last_layer.gain") and not p.requires_grad)
        )
        self.freeze_fixed_parameters()

    def _teacher_student_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        teacher, student = [], []
        for name in self._student_modules:
            teacher += list(getattr(self, f"teacher_{name}").parameters())
            student += list(getattr(self, name).parameters())
        return teacher, student

    def restart_schedules(self) -> None:
        """A new run from saved weights: the teacher-temperature warm-up and the frozen last layer start again."""
        self.progress.zero_()

    def teacher_temperature(self) -> float:
        """tau_t now: linear from `warmup_teacher_temp` to `teacher_temp` over the warm-up fraction, then constant."""
        c, progress = self.config, float(self.progress)
        if c.teacher_temp_warmup_fraction > 0 and progress < c.teacher_temp_warmup_fraction:
            return c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * (
                progress / c.teacher_temp_warmup_fraction
            )
        return c.teacher_temp

    def last_layer_frozen(self) -> bool:
        """True while the heads' last layers get no gradient (DINO: the first epoch)."""
        return self.training and float(self.progress) < self.config.freeze_last_layer_fraction

    def _accumulate_center(self, name: str, batch_mean: Tensor) -> None:
        """Remembers this micro-batch's mean teacher output for the centre update after the optimiser step."""
        if self.training:
            total, count = self._pending[name]
            batch_mean = batch_mean.detach()
            self._pending[name] = (batch_mean if total is None else total + batch_mean, count + 1)

    @torch.no_grad()
    def post_optimizer_step(self, step: int, max_steps: int) -> None:
        """EMA update of the teacher, then of every centre, then the progress of the schedules."""
        ema_update_(*self._teacher_student_pairs(), cosine_momentum(step, max_steps, self.config.ema_base))
        m = self.config.center_momentum
        for name, (total, count) in self._pending.items():
            if count:
                mean = reduce_across_processes(total / count, "mean")  # DINO all-reduces the mean
                getattr(self, name).mul_(m).add_(mean.to(getattr(self, name).dtype), alpha=1 - m)
            self._pending[name] = (None, 0)
        self.progress.fill_(step / max(max_steps, 1))
