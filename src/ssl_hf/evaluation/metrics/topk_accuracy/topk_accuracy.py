"""Top-1 and top-5 accuracy of ranked class predictions, as an `evaluate` metric module.

Load it by path (offline) with `evaluate.load(".../metrics/topk_accuracy")` or `ssl_hf.evaluation.metric_loading
.load_metric("topk_accuracy")`.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """\
Top-1 and top-5 accuracy of ranked class predictions: each sample gives its predicted class ids best first (e.g. the
indices of the top-k class scores); top-1 is the fraction of samples whose first prediction is the reference class,
top-5 the fraction whose reference class is among the first min(5, k) predictions (top-k when fewer than 5 are
given). This is the image-classification score of the k-NN and linear probes of DINO and MAE.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `list` of `int`): Per sample, predicted class ids ranked best first (at least one).
    references (`list` of `int`): Per sample, the true class id.

Returns:
    top1 (`float`): Fraction of samples in [0, 1] whose first prediction is the reference.
    top5 (`float`): Fraction of samples in [0, 1] whose reference is among their first min(5, k) predictions.

Examples:
    >>> metric = evaluate.load("path/to/topk_accuracy")
    >>> metric.compute(predictions=[[3, 1, 2], [0, 2, 1]], references=[3, 2])
    {'top1': 0.5, 'top5': 1.0}
"""

_CITATION = """\
@inproceedings{caron2021emerging,
  title={Emerging Properties in Self-Supervised Vision Transformers},
  author={Caron, Mathilde and Touvron, Hugo and Misra, Ishan and J{\\'e}gou, Herv{\\'e} and Mairal, Julien and
          Bojanowski, Piotr and Joulin, Armand},
  booktitle={ICCV},
  year={2021}
}
"""

TOP_K = 5


class TopkAccuracy(evaluate.Metric):
    """Top-1 and top-5 accuracy of per-sample ranked class ids against integer references."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions: list, references: list) -> dict[str, float]:
        if len(references) == 0:
            raise ValueError("topk_accuracy needs at least one sample.")
        if any(len(ranked) == 0 for ranked in predictions):
            raise ValueError("Each sample needs at least one predicted class id.")
        widths = {len(ranked) for ranked in predictions}
        if len(widths) == 1:  # the usual case: the same k for every sample
            ranked = np.asarray(predictions, dtype=np.int64)[:, :TOP_K]
            hits = ranked == np.asarray(references, dtype=np.int64)[:, None]
            top1, top5 = int(hits[:, 0].sum()), int(hits.any(axis=1).sum())
        else:
            top1 = sum(ranked[0] == ref for ranked, ref in zip(predictions, references))
            top5 = sum(ref in ranked[:TOP_K] for ranked, ref in zip(predictions, references))
        return {"top1": top1 / len(references), "top5": top5 / len(references)}
