"""TEC's base model: loading any pretrained ViT encoder and computing its two targets without forking its code.

The base model is kept out of `TECForPreTraining`'s module tree on purpose: it is not trained, not wrapped by
DDP/FSDP, not in `state_dict()` (so not in `save_pretrained` or Accelerate checkpoints) and not in the optimiser.
"""

import os
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, Dinov2Model, PreTrainedConfig, ViTMAEModel, ViTModel


SUPPORTED_TYPES = {"vit": ViTModel, "vit_mae": ViTMAEModel, "dinov2": Dinov2Model}
_WHAT = (
    "Give the folder (or Hub id) of an `ssl-hf export`, of a transformers ViTModel / ViTMAEModel / Dinov2Model "
    "checkpoint or of an ssl_hf run's `final/` folder, or an official MAE / iBOT / DINO / TEC `.pth` file."
)


@dataclass(frozen=True)
class BaseModelInfo:
    """What the new model must know about its base model before loading its weights."""

    model_type: str
    hidden_size: int
    num_attention_heads: int
    num_hidden_layers: int
    image_size: int
    patch_size: int
    num_channels: int

    @classmethod
    def from_config(cls, config: PreTrainedConfig, source: str = "the base model") -> "BaseModelInfo":
        if config.model_type.startswith("ssl_"):  # an ssl_hf pre-training checkpoint: its encoder is the base
            config = getattr(config, "backbone_config", None) or config
        if config.model_type not in SUPPORTED_TYPES:
            raise ValueError(
                f"TEC's base model must be a ViT encoder (model_type vit, vit_mae or dinov2); {source} has "
                f"model_type='{config.model_type}'. {_WHAT}"
            )
        return cls(
            model_type=config.model_type,
            hidden_size=config.hidden_size,
            num_attention_heads=config.num_attention_heads,
            num_hidden_layers=config.num_hidden_layers,
            image_size=config.image_size,
            patch_size=config.patch_size,
            num_channels=config.num_channels,
        )

    def check_student(self, student: PreTrainedConfig, source: str = "The base model") -> None:
        """Raises unless the base model cuts the student's input into the same patches."""
        same_size = self.image_size == student.image_size or self.model_type == "dinov2"  # DINOv2 always interpolates
        if self.patch_size != student.patch_size or not same_size or self.num_channels != student.num_channels:
            raise ValueError(
                f"{source} sees {self.image_size}px images in {self.patch_size}px patches ({self.num_channels} "
                f"channels); the new model {student.image_size}px in {student.patch_size}px patches "
                f"({student.num_channels} channels). TEC predicts the base model's per-patch targets, so both must "
                f"cut the image into the same patches: pass --image_size {self.image_size} --patch_size "
                f"{self.patch_size} (or choose a base model that matches)."
            )


def read_base_config(name_or_path: str, revision: str | None = None) -> PreTrainedConfig:
    """Reads only the config of a base model (no weights); an official `.pth` file is read and not converted."""
    import ssl_hf  # noqa: F401  registers ssl_hf configs for run checkpoints

    if os.path.isfile(name_or_path):
        return _official_checkpoint(name_or_path, read=True)
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read the base model '{name_or_path}': {err}\n{_WHAT}") from err


def load_base_encoder(name_or_path: str | os.PathLike, revision: str | None = None) -> nn.Module:
    """Loads the encoder of a base model, frozen and in eval mode (an official `.pth` is converted in memory)."""
    from transformers import AutoModelForPreTraining

    name_or_path = str(name_or_path)
    if os.path.isfile(name_or_path):
        return freeze(_official_checkpoint(name_or_path, read=False))
    config = read_base_config(name_or_path, revision)
    BaseModelInfo.from_config(config, f"'{name_or_path}'")
    if config.model_type.startswith("ssl_"):
        encoder = AutoModelForPreTraining.from_pretrained(name_or_path, revision=revision).get_export_backbone()
    elif config.model_type == "vit":
        encoder = ViTModel.from_pretrained(name_or_path, revision=revision, add_pooling_layer=False)
    else:
        encoder = SUPPORTED_TYPES[config.model_type].from_pretrained(name_or_path, revision=revision)
    return freeze(encoder)


def _official_checkpoint(path: str, read: bool):
    """The `ViTConfig` (`read`) or the `ViTModel` of a released timm-style ViT file (MAE, iBOT, DINO, TEC, ...)."""
    from ...convert import ConversionError, load_vit_encoder, read_vit_config

    try:
        return read_vit_config(path) if read else load_vit_encoder(path)
    except ConversionError as err:
        raise ValueError(
            f"Cannot use '{path}' as TEC's base model: {err} A base-model file must hold a timm-style ViT with cls "
            "token (MAE, iBOT, DINO or TEC release); for other widths or layouts convert it first with `ssl-hf "
            "convert` and pass the output folder."
        ) from err


def freeze(encoder: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the base model is never trained."""
    return encoder.eval().requires_grad_(False)


def _blocks(encoder: nn.Module) -> nn.ModuleList:
    return encoder.encoder.layer if isinstance(encoder, Dinov2Model) else encoder.layers


@dataclass
class TECTargets:
    """What the base model gives for one batch.

    Attributes:
        features: `(B, L, C_t)` average of the last blocks' patch outputs, normalised (float32).
        attention_probs: `(B, H_t, R, L)` softmax(logits / tau) over the patch keys of the selected rows (float32),
            or None without the attention target.
        rows: `(B, R)` token index of each attention row (0 = cls, 1 + i = patch i).
        topk_indices: `(B, k)` patches the cls token attends to most (head-mean of the logits), or None.
    """

    features: Tensor
    attention_probs: Tensor | None = None
    rows: Tensor | None = None
    topk_indices: Tensor | None = None


class BaseModelTargets:
    """Runs a frozen ViT encoder on the full image and returns TEC's targets.

    Block outputs are read with forward hooks and the last block's attention logits are recomputed from the input
    of its attention module (a forward pre-hook) with the module's own query/key projections, so any attention kernel
    (SDPA, flash, eager) works and the base model's code is untouched.

    Args:
        encoder: A `ViTModel`, `ViTMAEModel` or `Dinov2Model`.
        last_layers: Blocks averaged into the feature target.
    """

    def __init__(self, encoder: nn.Module, last_layers: int = 2):
        if type(encoder) not in SUPPORTED_TYPES.values():
            raise TypeError(
                f"The base model must be a ViTModel, ViTMAEModel or Dinov2Model, got {type(encoder).__name__}"
            )
        blocks = _blocks(encoder)
        if last_layers > len(blocks):
            raise ValueError(f"teacher_last_layers={last_layers} but the base model has {len(blocks)} blocks")
        self.encoder = freeze(encoder)
        self.info = BaseModelInfo.from_config(encoder.config)
        self.last_layers = last_layers
        if self.info.model_type == "vit_mae":  # no masking and no shuffling: ratio 0 here, ascending noise per call
            self.encoder.config.mask_ratio = 0.0
        # hooks stay registered (no re-registration per step, friendly to torch.compile) and record only inside
        # __call__; they read the last blocks' outputs and the input of the last attention module
        self._captured: dict[str, Tensor] = {}
        self._capturing = False
        for i, block in enumerate(blocks[-last_layers:]):
            block.register_forward_hook(partial(self._keep_output, f"block{i}"))
        blocks[-1].attention.register_forward_pre_hook(self._keep_attention_input, with_kwargs=True)

    def _keep_output(self, key: str, module, args, output) -> None:
        if self._capturing:
            self._captured[key] = output[0] if isinstance(output, tuple) else output

    def _keep_attention_input(self, module, args, kwargs) -> None:
        if self._capturing:
            self._captured["attention_input"] = args[0] if args else kwargs["hidden_states"]

    def to(self, device: torch.device) -> "BaseModelTargets":
        self.encoder.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.no_grad()
    def __call__(
        self,
        pixel_values: Tensor,
        *,
        target_norm: str = "patch",
        attention_mode: str | None = "select",
        topk: int = 15,
        tau: float = 1.0,
        interpolate_pos_encoding: bool = False,
    ) -> TECTargets:
        """Targets of TEC for a batch of full (unmasked) images; `attention_mode=None` skips the attention target."""
        self._captured.clear()
        self._capturing = True
        try:
            self.encoder(pixel_values, **self._forward_kwargs(pixel_values, interpolate_pos_encoding))
        finally:
            self._capturing = False
        outputs = [self._captured[f"block{i}"] for i in range(self.last_layers)]
        attention = _blocks(self.encoder)[-1].attention
        features = normalize_target(torch.stack(outputs).float().mean(0)[:, 1:], target_norm)
        if attention_mode is None:
            return TECTargets(features)
        q, k = (
            split_heads(proj(self._captured["attention_input"]), attention.num_attention_heads)
            for proj in (attention.q_proj, attention.k_proj)
        )
        patch_keys = k[:, :, 1:].float()
        cls_logits = (q[:, :, :1].float() @ patch_keys.transpose(-1, -2)).squeeze(2) * attention.scaling  # (B, H, L)
        topk_indices = None
        B, L = q.shape[0], q.shape[2] - 1
        if attention_mode == "select":
            topk_indices = cls_logits.mean(1).topk(topk, dim=-1).indices  # rank by the head-mean of the cls row
            rows = torch.cat([torch.zeros_like(topk_indices[:, :1]), topk_indices + 1], dim=1)
        elif attention_mode == "cls_only":
            rows = torch.zeros(B, 1, dtype=torch.long, device=q.device)
        elif attention_mode == "all":
            rows = torch.arange(L + 1, device=q.device).expand(B, -1)
        else:
            raise ValueError(f"attention_mode must be select, cls_only or all, got '{attention_mode}'")
        logits = (gather_rows(q, rows).float() @ patch_keys.transpose(-1, -2)) * attention.scaling  # (B, H, R, L)
        return TECTargets(features, F.softmax(logits / tau, dim=-1), rows, topk_indices)

    def _forward_kwargs(self, pixel_values: Tensor, interpolate_pos_encoding: bool) -> dict:
        if self.info.model_type == "dinov2":
            return {}
        kwargs = {"interpolate_pos_encoding": interpolate_pos_encoding}
        if self.info.model_type == "vit_mae":
            B, _, H, W = pixel_values.shape
            L = (H // self.info.patch_size) * (W // self.info.patch_size)
            kwargs["noise"] = torch.arange(L, device=pixel_values.device, dtype=torch.float32).expand(B, -1)
        return kwargs


def normalize_target(features: Tensor, norm: str) -> Tensor:
    """TEC's feature-target normalisation (Eq. 3-4): over the `patch`es of each image and channel, or per `channel`.

    Unbiased variance and eps 1e-6, as the official code.
    """
    if norm == "none":
        return features
    dim = 1 if norm == "patch" else -1 if norm == "channel" else None
    if dim is None:
        raise ValueError(f"target_norm must be patch, channel or none, got '{norm}'")
    return (features - features.mean(dim, keepdim=True)) / (features.var(dim, keepdim=True) + 1e-6).sqrt()


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """`(B, N, H * d)` -> `(B, H, N, d)`."""
    B, N, _ = x.shape
    return x.view(B, N, num_heads, -1).transpose(1, 2)


def gather_rows(x: Tensor, rows: Tensor) -> Tensor:
    """Rows `(B, R)` of `x` `(B, H, N, d)` -> `(B, H, R, d)`."""
    B, H, _, d = x.shape
    return torch.gather(x, 2, rows[:, None, :, None].expand(B, H, -1, d))
