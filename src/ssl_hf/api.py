"""The public API: every name `ssl_hf` exports. Importing it registers every method with the Auto classes."""

from .backbones import backbone_config
from .models import asl, byol, dino, mae, msbreg, selfpatch, tec
from .models.asl import ASLConfig, ASLForPreTraining, ASLPreTrainingOutput
from .models.byol import BYOLConfig, BYOLForPreTraining, BYOLPreTrainingOutput
from .models.dino import DINOConfig, DINOForPreTraining, DINOPreTrainingOutput
from .models.mae import MAEConfig, MAEForPreTraining, MAEPreTrainingOutput
from .models.msbreg import EmbeddingPreTrainingOutput, MSBRegConfig, MSBRegForPreTraining
from .models.selfpatch import SelfPatchConfig, SelfPatchForPreTraining, SelfPatchPreTrainingOutput
from .models.tec import TECConfig, TECForPreTraining, TECModel, TECPreTrainingOutput
from .registry import METHODS, MethodSpec, get_method, register_method


__all__ = [
    "METHODS",
    "ASLConfig",
    "ASLForPreTraining",
    "ASLPreTrainingOutput",
    "BYOLConfig",
    "BYOLForPreTraining",
    "BYOLPreTrainingOutput",
    "DINOConfig",
    "DINOForPreTraining",
    "DINOPreTrainingOutput",
    "EmbeddingPreTrainingOutput",
    "MAEConfig",
    "MAEForPreTraining",
    "MAEPreTrainingOutput",
    "MSBRegConfig",
    "MSBRegForPreTraining",
    "MethodSpec",
    "SelfPatchConfig",
    "SelfPatchForPreTraining",
    "SelfPatchPreTrainingOutput",
    "TECConfig",
    "TECForPreTraining",
    "TECModel",
    "TECPreTrainingOutput",
    "asl",
    "backbone_config",
    "byol",
    "dino",
    "get_method",
    "mae",
    "msbreg",
    "register_method",
    "selfpatch",
    "tec",
]
