"""`--mixed_precision auto`: choose fp32 or bf16 autocast by timing a few training steps of the real model.

On CPUs the answer depends on the machine, not on its flags: on two machines of the same kind (AVX-512 with bf16, no
AMX) bf16 autocast made one MAE step 1.5x faster and the other 2.3x slower (`shared/small_scale.md`). So the choice
is measured: forward + backward of the run's model on a small batch of its own views, in each precision.
"""

import copy
import logging
import math
import time

import torch

from ..data.datasets import load_image_source
from ..data.pipeline import SKIPPED, ViewsDataset


logger = logging.getLogger(__name__)


def _step_seconds(
    model: torch.nn.Module, batch: dict, bf16: bool, device: torch.device, steps: int, give_up: float = math.inf
) -> float:
    """Median seconds of `steps` forward + backward passes after one warm-up pass.

    Stops after the warm-up and returns its time when that already exceeds `give_up` seconds (a precision several
    times slower than the other needs no more evidence).
    """
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if i == 0 and elapsed > give_up:
            return elapsed
        if i:
            times.append(elapsed)
    return sorted(times)[len(times) // 2]


def choose_precision(
    spec, model_config, args, resumed: str | None = None, steps: int = 3, max_images: int = 16
) -> tuple[str, dict]:
    """Returns `("no" | "bf16", timings)` for `--mixed_precision auto`.

    A resumed run keeps the precision it chose at its start (`resumed`). On CUDA: bf16 where the GPU supports it.
    On CPU: times `steps` forward + backward passes (after a warm-up) of a copy of the model on up to `max_images`
    images of the run's views in fp32 and in bf16 autocast (bf16 stops after its warm-up pass when that takes over
    3x an fp32 step), and keeps bf16 only when it is at least 10 % faster. Only the ratio matters, so a small batch
    keeps the probe short: on a 2-core machine where bf16 is ~15x slower, timing a full batch of 64 took 44 s of a
    7-minute run, 16 images take about a quarter of that. Every random generator is restored afterwards, so the
    run itself is the same as with that precision given explicitly.

    Args:
        spec: The method's `MethodSpec`.
        model_config: The method config.
        args: The resolved `TrainingArguments`.
        resumed: The precision recorded in the checkpoint being resumed, if any.
        steps: Timed passes per precision.
        max_images: Images per timed pass (the run's batch size when smaller).
    """
    if resumed is not None:
        return resumed, {"choice": resumed, "reason": "kept from the run being resumed"}
    if torch.cuda.is_available():
        choice = "bf16" if torch.cuda.is_bf16_supported() else "no"
        return choice, {"choice": choice, "reason": "CUDA device" + ("" if choice == "bf16" else " without bf16")}
    if args.streaming:
        return "no", {"choice": "no", "reason": "streaming data is not timed; give --mixed_precision bf16 to use it"}
    cpu_rng = torch.get_rng_state()
    try:
        torch.manual_seed(args.seed)
        model = spec.model_class(copy.deepcopy(model_config)).train()
        source = load_image_source(
            args.dataset, args.train_split, config_name=args.dataset_config, image_column=args.image_column
        )
        views = args.build_views(spec, model_config)
        dataset = ViewsDataset(source, views, seed=args.seed)
        images = min(args.batch_size, max_images, len(dataset))
        batch = dataset.__getitems__(list(range(images)))
        batch = {k: v for k, v in batch.items() if k != SKIPPED}
        device = torch.device("cpu")
        fp32 = _step_seconds(model, batch, False, device, steps)
        bf16 = _step_seconds(model, batch, True, device, steps, give_up=3 * fp32)
    finally:
        torch.set_rng_state(cpu_rng)
    choice = "bf16" if bf16 < 0.9 * fp32 else "no"
    timings = {
        "choice": choice,
        "fp32_step_seconds": round(fp32, 4),
        "bf16_step_seconds": round(bf16, 4),
        "timed_images": images,
    }
    logger.info(
        "--mixed_precision auto: a step on %d images takes %.3f s in fp32 and %.3f s in bf16 autocast here; using %s.",
        images,
        fp32,
        bf16,
        "bf16" if choice == "bf16" else "fp32",
    )
    return choice, timings
