"""Mean intersection over union and pixel accuracy of integer segmentation maps, as an `evaluate` metric module.

Load it by path (offline) with `evaluate.load(".../metrics/mean_iou")` or `ssl_hf.evaluation.metric_loading
.load_metric("mean_iou")`.
"""

import datasets
import evaluate
import numpy as np
import torch


_DESCRIPTION = """\
Semantic-segmentation scores of integer class maps. Every pixel of every image is counted in one confusion matrix
(row = true class, column = predicted class); then, per class c, IoU_c = TP_c / (TP_c + FP_c + FN_c). The mean IoU
averages IoU_c over the classes present in the ground truth or the prediction (a class absent from both has no IoU);
the pixel accuracy is the fraction of pixels whose predicted class is the true one. All three are in percent.

Two input forms (configurations):
- "default": per image, the flattened predicted and true class maps (simple; every pixel goes through the metric's
  Arrow buffer as a Python int, about 0.5 s per million pixels).
- "counts": pixels grouped by (predicted class, true class) pair: one row per pair with its pixel count, e.g. the
  non-zero cells of per-image or per-batch confusion matrices. Same scores, and the cost no longer grows with the
  number of pixels: use it for large evaluations.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: "default": `list` of per-image `list`s of `int`, the predicted class id of every pixel (flattened;
        images may differ in size but must match their references). "counts": `list` of `int`, the predicted class
        of each group of pixels.
    references: Like `predictions`, the true class ids.
    counts ("counts" configuration only): `list` of `int` >= 0, the number of pixels of each group.
    num_classes (`int`): Number of classes C; every class id must lie in [0, C).

Returns:
    mean_iou (`float`): Mean IoU in [0, 100] over the classes present in prediction or ground truth (0 if none).
    pixel_accuracy (`float`): Percent of pixels predicted right (0 without pixels).
    per_class_iou (`list`): C entries, the IoU of each class in percent, or None for a class absent from both the
        prediction and the ground truth.

Examples:
    >>> metric = evaluate.load("path/to/mean_iou")
    >>> metric.compute(predictions=[[0, 0, 1, 1]], references=[[0, 1, 1, 1]], num_classes=3)
    {'mean_iou': 58.33333333333333, 'pixel_accuracy': 75.0, 'per_class_iou': [50.0, 66.66666666666666, None]}
    >>> counts = evaluate.load("path/to/mean_iou", config_name="counts")
    >>> counts.compute(predictions=[0, 0, 1], references=[0, 1, 1], counts=[1, 1, 2], num_classes=3)
    {'mean_iou': 58.33333333333333, 'pixel_accuracy': 75.0, 'per_class_iou': [50.0, 66.66666666666666, None]}
"""

_CITATION = """\
@article{everingham2010pascal,
  title={The Pascal Visual Object Classes (VOC) Challenge},
  author={Everingham, Mark and Van Gool, Luc and Williams, Christopher K. I. and Winn, John and Zisserman, Andrew},
  journal={International Journal of Computer Vision},
  volume={88},
  number={2},
  pages={303--338},
  year={2010}
}
"""

CONFIGS = ("default", "counts")


class MeanIou(evaluate.Metric):
    """Mean IoU (over present classes), pixel accuracy and per-class IoU of integer class maps."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in CONFIGS:
            raise ValueError(f"Unknown mean_iou configuration '{self.config_name}'; choose from {', '.join(CONFIGS)}.")
        if self.config_name == "counts":
            ids = datasets.Value("int64")
            features = {"predictions": ids, "references": ids, "counts": datasets.Value("int64")}
            form = "numpy"  # flat int columns come back as arrays, not Python lists
        else:
            maps = datasets.Sequence(datasets.Value("int64"))
            features = {"predictions": maps, "references": maps}
            form = None  # `evaluate` only formats flat `Value` columns as numpy
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
            format=form,
        )

    def _compute(self, predictions, references, num_classes: int, counts=None) -> dict:
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if self.config_name == "counts":
            pred, true = np.asarray(predictions, np.int64), np.asarray(references, np.int64)
            weights = np.asarray(counts, np.int64)
            if weights.size and weights.min() < 0:
                raise ValueError("counts must be >= 0.")
        else:
            if counts is not None:
                raise ValueError(
                    'counts are an input of the "counts" configuration: load it with config_name="counts".'
                )
            pred, true, weights = _flatten(predictions), _flatten(references), None
            if pred.shape != true.shape or any(len(p) != len(r) for p, r in zip(predictions, references)):
                raise ValueError("Each predicted map must hold as many pixels as its reference map.")
        if pred.size and (min(pred.min(), true.min()) < 0 or max(pred.max(), true.max()) >= num_classes):
            raise ValueError(f"Class ids must lie in [0, num_classes={num_classes}).")
        cells = true * num_classes + pred
        if weights is None:
            flat = np.bincount(cells, minlength=num_classes * num_classes)
        else:  # integer sums (np.bincount's weights would go through float64)
            flat = np.zeros(num_classes * num_classes, np.int64)
            np.add.at(flat, cells, weights)
        return _scores(torch.from_numpy(flat.reshape(num_classes, num_classes)))


def _flatten(maps: list) -> np.ndarray:
    """All pixels of a list of per-image maps as one int64 vector."""
    if len(maps) == 0:
        return np.zeros(0, np.int64)
    return np.concatenate([np.asarray(m, dtype=np.int64).reshape(-1) for m in maps])


def _scores(confusion: torch.Tensor) -> dict:
    """Mean IoU, pixel accuracy and per-class IoU (percent) of a `(C, C)` count matrix (row = true class).

    The arithmetic runs in float64 torch (the reductions, and so the last bits of the mean, match torch tensor code).
    """
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp  # predicted c + true c - both
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    total = confusion.sum()
    return {
        "mean_iou": 100.0 * iou[present].mean().item() if present.any() else 0.0,
        "pixel_accuracy": 100.0 * (tp.sum() / total).item() if total > 0 else 0.0,
        "per_class_iou": [100.0 * v if ok else None for v, ok in zip(iou.tolist(), present.tolist())],
    }
