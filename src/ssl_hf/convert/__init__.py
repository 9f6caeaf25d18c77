"""`ssl-hf convert`: official released checkpoints -> stock transformers exports.

Public API (stable):

- `convert_checkpoint(checkpoint, output_dir, source_format, ...)`: the encoder export (`ssl-hf convert`).
- `convert_full_checkpoint(checkpoint, output_dir, source_format, ...)`: the whole ssl_hf pre-training model
  (`ssl-hf convert --full`; MAE, DINO, SelfPatch, solo-learn / lightly BYOL), for `ssl-hf pretrain --init_from`.
- `load_official_state_dict(path, key=None)`: a released file's state dict (containers unwrapped, `module.` removed,
  `torch.load(weights_only=True)` only).
- `timm_vit_to_hf(state_dict, prefix="")`: timm-style ViT keys under `prefix` -> transformers `ViTModel` weights and
  `ViTConfig`.

Also: `FORMATS` (the `--from` values and their layouts), `ConversionError`, `torchvision_resnet_to_hf`,
`cls_free_vit_to_hf`, and `load_vit_encoder` / `read_vit_config` (TEC's `--base_model x.pth`).
"""

from .encoder import convert_checkpoint, load_vit_encoder, read_vit_config
from .full import FULL_FORMATS, convert_full_checkpoint
from .layouts import FORMATS, HEADS_BY_WIDTH, ConversionError, SourceFormat, load_official_state_dict
from .resnet import torchvision_resnet_to_hf
from .vit import cls_free_vit_to_hf, timm_vit_to_hf


__all__ = [
    "FORMATS",
    "FULL_FORMATS",
    "HEADS_BY_WIDTH",
    "ConversionError",
    "SourceFormat",
    "cls_free_vit_to_hf",
    "convert_checkpoint",
    "convert_full_checkpoint",
    "load_official_state_dict",
    "load_vit_encoder",
    "read_vit_config",
    "timm_vit_to_hf",
    "torchvision_resnet_to_hf",
]
