"""Data: built-in offline sets, HF dataset loading, per-method view presets."""

from .builtin import BUILTIN_DATASETS, is_builtin, load_builtin
from .datasets import ImageSource, decode_image, load_image_source
from .views import IMAGENET_MEAN, IMAGENET_STD, EvalView, MaskedView, build_views
