"""Evaluation of exported backbones (D7): consumes only what plain transformers loads."""

from ..data.datasets import ImageSource, load_image_source  # importable here before the package face was split
from ..data.views import EvalView
from .cache import FeatureCache, default_cache_dir, model_fingerprint
from .dense import SEGMENTATION_COLUMN, confusion_matrix, dense_probe, iou_metrics, resize_segmentation
from .evaluate import FEATURE_PROTOCOLS, PROBE_BASE_LR, PROTOCOLS, evaluate_backbone, evaluate_dense, evaluate_knn
from .features import (
    applied_pool,
    batchnorm_layers,
    calibrate_batchnorm,
    extract_features,
    extract_patch_features,
    has_cls_token,
    load_backbone,
    load_random_init,
    patch_tokens,
    pooled_features,
)
from .fewshot import fewshot_accuracy
from .finetune import finetune_accuracy, layer_decay_param_groups
from .floor import floor_label
from .knn import knn_accuracy, knn_predict
from .linear_probe import LinearProbe, linear_probe_accuracy
from .representation import feature_diagnostics, representation_diagnostics


__all__ = [
    "FEATURE_PROTOCOLS",
    "PROBE_BASE_LR",
    "PROTOCOLS",
    "SEGMENTATION_COLUMN",
    "FeatureCache",
    "LinearProbe",
    "applied_pool",
    "batchnorm_layers",
    "calibrate_batchnorm",
    "confusion_matrix",
    "default_cache_dir",
    "dense_probe",
    "evaluate_backbone",
    "evaluate_dense",
    "evaluate_knn",
    "extract_features",
    "extract_patch_features",
    "feature_diagnostics",
    "fewshot_accuracy",
    "finetune_accuracy",
    "floor_label",
    "has_cls_token",
    "iou_metrics",
    "knn_accuracy",
    "knn_predict",
    "layer_decay_param_groups",
    "linear_probe_accuracy",
    "load_backbone",
    "load_random_init",
    "model_fingerprint",
    "patch_tokens",
    "pooled_features",
    "representation_diagnostics",
    "resize_segmentation",
]
