"""Watching a run learn (DESIGN D11): an online weighted k-NN of the encoder that would be exported, and collapse alarms.

Both read the model and never write to it: the k-NN runs the encoder in eval mode under `no_grad` and restores the
train mode and every random generator it could touch, and the collapse statistics are computed from a step's
outputs. A run with monitoring therefore follows exactly the trajectory of the same run without it.
"""

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..data.datasets import load_image_source
from ..data.views import EvalView
from ..evaluation.diagnostics import effective_rank, embedding_std
from ..evaluation.features import batchnorm_layers, calibrate_batchnorm, pooled_features
from ..evaluation.knn import knn_predict
from ..losses.distillation import teacher_probabilities


logger = logging.getLogger(__name__)


class OnlineKNN:
    """Weighted k-NN top-1 (DINO's: cosine, k = 20, T = 0.07) of an encoder on a labelled dataset, during training.

    The images of both splits are decoded and resized once, at construction (at most `max_images` per split, an
    evenly spaced subset so every class keeps its share); each call is then one feature pass over them.

    Args:
        dataset: Built-in name, Hub id, folder or files with `train` and `test` splits.
        label_column: Integer class column.
        image_size: Side of the encoder's input.
        pool: Image feature of token encoders: `cls` or `mean` of the patch tokens (CNNs: their pooled output).
        max_images: Images per split (None: all).
        batch_size: Images per forward pass.
        k: Neighbours.
        temperature: Temperature of the neighbour weights.
    """

    def __init__(
        self,
        dataset: str,
        label_column: str,
        image_size: int,
        pool: str = "cls",
        max_images: int | None = 5000,
        batch_size: int = 256,
        k: int = 20,
        temperature: float = 0.07,
    ):
        self.pool, self.batch_size, self.k, self.temperature = pool, batch_size, k, temperature
        self.view = view = EvalView(image_size)
        self.pixels, self.labels = {}, {}
        for split in ("train", "test"):
            source = load_image_source(dataset, split)
            if split == "train":
                self.train_source = source
            if label_column not in source.dataset.column_names:
                raise ValueError(
                    f"--eval_dataset {dataset} ({split}) has no column '{label_column}' (columns: "
                    f"{', '.join(source.dataset.column_names)}); set --eval_label_column."
                )
            n = len(source.dataset)
            if n == 0:
                raise ValueError(f"--eval_dataset {dataset} has an empty '{split}' split.")
            rows = np.linspace(0, n - 1, min(n, max_images or n)).round().astype(int).tolist()
            images, columns = source.read(rows, [label_column])
            keep = [i for i, im in enumerate(images) if im is not None]
            if not keep:
                raise ValueError(f"--eval_dataset {dataset} ({split}): no readable image.")
            self.pixels[split] = view([images[i] for i in keep])["pixel_values"]
            self.labels[split] = torch.as_tensor(np.asarray(columns[label_column])[keep]).long()
        self.num_classes = int(max(lab.max() for lab in self.labels.values())) + 1

    @torch.no_grad()
    def features(self, encoder: nn.Module, split: str) -> Tensor:
        """`(N, D)` float32 features of a split's images."""
        device = next(encoder.parameters()).device
        chunks = [
            pooled_features(encoder, batch.to(device), self.pool).float().cpu()
            for batch in self.pixels[split].split(self.batch_size)
        ]
        return torch.cat(chunks)

    def top1(self, encoder: nn.Module) -> float:
        """k-NN top-1 in percent; the encoder's mode and every RNG are left as they were."""
        with preserved_state(encoder):
            train, test = self.features(encoder, "train"), self.features(encoder, "test")
        scores = knn_predict(train, self.labels["train"], test, self.num_classes, self.k, self.temperature)
        return round(100 * (scores.argmax(1) == self.labels["test"]).float().mean().item(), 2)

    def __call__(self, encoder: nn.Module, floor: bool = False) -> dict[str, float]:
        """`{"knn_top1": percent, "knn_seconds": s}`, plus `knn_floor` with `floor=True`.

        `knn_floor` is the k-NN of a copy of the encoder whose BatchNorm statistics are estimated on the evaluation
        set's training images (`calibrate_batchnorm`): at step 0 it is the calibrated floor the export is compared
        with, whereas `knn_top1` of a fresh network runs its BatchNorms with running statistics 0 / 1 (nearly the
        identity), which can score far higher. Equal to `knn_top1` for networks without BatchNorm.
        """
        start = time.perf_counter()
        out = {"knn_top1": self.top1(encoder)}
        if floor:
            out["knn_floor"] = out["knn_top1"]
            if batchnorm_layers(encoder):
                twin = copy.deepcopy(encoder)
                with preserved_state(twin), torch.no_grad():
                    calibrate_batchnorm(twin, self.train_source, self.view, max_images=2048)
                out["knn_floor"] = self.top1(twin)
                del twin
        out["knn_seconds"] = round(time.perf_counter() - start, 2)
        return out


class preserved_state:
    """Context: `module.eval()` inside, then the previous train/eval mode of every submodule and every RNG state."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self.module.eval()
        return self.module

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        return False


# ----------------------------------------------------------------------------------------------- collapse


@torch.no_grad()
def collapse_statistics(output, model: nn.Module) -> dict[str, float]:
    """Collapse statistics of one step's outputs, by what the output holds.

    - Embedding methods (`target_projections`, BYOL / MSBReg): `embedding_std`, the mean over dimensions of the std
      across images of the L2-normalised target projection (`1/sqrt(d)` when spread, 0 when collapsed, as
      SimSiam's), with `embedding_std_ref` = `1/sqrt(d)`, and `embedding_rank`, its effective rank.
    - Self-distillation (`teacher_logits`, DINO / SelfPatch): `teacher_entropy`, the mean entropy of the centred and
      sharpened teacher distribution, with `teacher_entropy_max` = log K (uniform: collapse by flattening) and
      `teacher_batch_entropy`, the entropy of its batch mean (near 0: every image picks the same prototype), and
      `center_norm`.
    - ASL (`loss_align` and `loss_mae`): `align_to_mae`, their ratio (over 10: alignment dominates; under 1e-3: both
      branches predict the same, often a constant).
    """
    stats: dict[str, float] = {}
    targets = getattr(output, "target_projections", None)
    if targets is not None:
        z = targets[0].float()
        stats["embedding_std"] = embedding_std(z)
        stats["embedding_std_ref"] = 1 / math.sqrt(z.shape[-1])
        stats["embedding_rank"] = effective_rank(nn.functional.normalize(z, dim=-1))
    teacher = getattr(output, "teacher_logits", None)
    center = getattr(model, "center", None)
    if teacher is not None and center is not None and hasattr(model, "teacher_temperature"):
        q = teacher_probabilities(teacher.reshape(-1, teacher.shape[-1]), center, model.teacher_temperature())
        stats["teacher_entropy"] = float(-(q * q.clamp(min=1e-12).log()).sum(-1).mean())
        mean = q.mean(0)
        stats["teacher_batch_entropy"] = float(-(mean * mean.clamp(min=1e-12).log()).sum())
        stats["teacher_entropy_max"] = math.log(q.shape[-1])
        stats["center_norm"] = float(center.float().norm())
    align, mae = getattr(output, "loss_align", None), getattr(output, "loss_mae", None)
    if align is not None and mae is not None:
        stats["align_to_mae"] = float(align.detach().float() / mae.detach().float().clamp(min=1e-12))
    return stats


@dataclass(frozen=True)
class Alarm:
    """A collapse test on the logged statistics, with the advice printed when it trips."""

    name: str
    trips: Callable[[dict], bool]
    advice: str


ALARMS = (
    Alarm(
        "embedding collapse",
        lambda s: "embedding_std" in s and s["embedding_std"] < 0.1 * s["embedding_std_ref"],
        "the normalised embedding's std per dimension fell below 0.1/sqrt(d): the projections are collapsing to a "
        "point. Usually fixed by a lower learning rate, a lower --lars_trust_coefficient, a lower ema_base "
        "(faster target) or milder crops (--crop_min_scale).",
    ),
    Alarm(
        "dimensional collapse",
        lambda s: "embedding_rank" in s and s["embedding_rank"] < 2.0,
        "the embedding's effective rank fell below 2: the projections span a line. Usually fixed by a lower "
        "learning rate or --lars_trust_coefficient, or more weight decay.",
    ),
    Alarm(
        "uniform teacher",
        lambda s: "teacher_entropy" in s and s["teacher_entropy"] > 0.98 * s["teacher_entropy_max"],
        "the teacher's distribution is within 2 % of uniform (entropy near log K): the loss sits at log K and "
        "nothing is learned. Usually fixed by a sharper teacher (lower teacher_temp), fewer prototypes (out_dim), "
        "a lower center_momentum or a faster teacher (lower ema_base).",
    ),
    Alarm(
        "one-prototype teacher",
        lambda s: "teacher_batch_entropy" in s and s["teacher_batch_entropy"] < 0.1,
        "the teacher puts every image on the same prototype (its batch-mean entropy is near 0). Usually fixed by "
        "stronger centring (higher center_momentum is slower; check it is < 1) or a higher teacher_temp.",
    ),
    Alarm(
        "alignment dominates",
        lambda s: "align_to_mae" in s and s["align_to_mae"] > 10.0,
        "loss_align is over 10x loss_mae: the alignment term drives the encoder more than the reconstruction. "
        "Usually fixed by a lower alignment_weight.",
    ),
    Alarm(
        "identical branches",
        lambda s: "align_to_mae" in s and s["align_to_mae"] < 1e-3,
        "loss_align is under 1/1000 of loss_mae: both branches predict the same pixels, usually a constant the "
        "decoder gives whatever it sees (loss_mae stays near its start). Measured on digit-scenes at weight 1: ~700 "
        "steps stuck there. Usually fixed by a lower alignment_weight.",
    ),
)


class CollapseAlarms:
    """Checks `ALARMS` on each step's statistics after the warm-up; warns once per alarm, naming the usual fix.

    Args:
        warmup_steps: Steps before any alarm is checked (statistics of a fresh network are not meaningful).
        log: Called with the warning text (default: `logging.warning`).
    """

    def __init__(self, warmup_steps: int, log: Callable[[str], None] | None = None):
        self.warmup_steps = warmup_steps
        self.log = log or logger.warning
        self.tripped: dict[str, int] = {}

    def check(self, step: int, stats: dict) -> list[str]:
        """Names of the alarms that trip for the first time at `step`."""
        if step <= self.warmup_steps:
            return []
        new = []
        for alarm in ALARMS:
            if alarm.name not in self.tripped and alarm.trips(stats):
                self.tripped[alarm.name] = step
                self.log(f"Collapse alarm at step {step} ({alarm.name}): {alarm.advice}")
                new.append(alarm.name)
        return new
