"""Data: built-in offline sets, HF dataset loading, per-method view presets."""

from .builtin import BUILTIN_DATASETS, is_builtin, load_builtin
from .datasets import ImageSource, decode_image, load_image_source
from .pixels import IMAGENET_MEAN, IMAGENET_STD
from .views import EvalView, MaskedView, build_views
