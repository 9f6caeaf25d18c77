"""ssl_hf: self-supervised vision pre-training methods as Hugging Face models.

`import ssl_hf` registers every method's config with `AutoConfig` and its `<M>ForPreTraining` with
`AutoModelForPreTraining`.
"""

from .backbones import backbone_config
from .models import asl, byol, dino, mae, msbreg, selfpatch, tec
from .models.asl import ASLConfig, ASLForPreTraining, ASLPreTrainingOutput
from .models.byol import BYOLConfig, BYOLForPreTraining, EmbeddingPreTrainingOutput
from .models.dino import DINOConfig, DINOForPreTraining, DINOPreTrainingOutput
from .models.mae import MAEConfig, MAEForPreTraining, MAEPreTrainingOutput
from .models.msbreg import MSBRegConfig, MSBRegForPreTraining
from .models.selfpatch import SelfPatchConfig, SelfPatchForPreTraining, SelfPatchPreTrainingOutput
from .models.tec import TECConfig, TECForPreTraining, TECModel, TECPreTrainingOutput
from .registry import METHODS, MethodSpec, get_method, register_method


__version__ = "0.1.0"
