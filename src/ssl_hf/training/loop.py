"""The Accelerate pre-training loop shared by every method (D4).

It knows no method: it reads `output.loss`, calls `post_optimizer_step`, and saves/restores everything needed to
continue a run exactly.
"""

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.datasets import load_image_source
from ..data.pipeline import SKIPPED, StreamingViews, ViewsDataset
from ..export import input_size
from ..registry import MethodSpec
from .arguments import TrainingArguments
from .checkpoints import CHECKPOINTS, META, RUN_RECORD, check_resume
from .curves import plot_training_curves
from .init_from import config_for_init, load_init_weights
from .interrupt import StopOnSignal, TrainingInterrupted, ignore_stop_signals
from .memory import keep_freed_cpu_memory
from .monitor import CollapseAlarms, OnlineKNN, collapse_statistics
from .optim import build_optimizer, clip_grad_norm_per_tensor_, scaled_lr
from .precision import choose_precision
from .schedules import cosine_with_warmup


logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN or infinite; the weights of that step are left untouched."""


def pretrain(spec: MethodSpec, model_config, args: TrainingArguments) -> Path:
    """Pre-trains `spec.model_class(model_config)` and returns the directory of the final `save_pretrained`.

    With `args.init_from`, `model_config` may be None (the config saved in that folder is used; a given one must
    equal it) and the model starts from the folder's weights and buffers (`training.init_from`).

    Writes into `args.output_dir`: `args.json`, `metrics.jsonl` (one line every `logging_steps` optimiser steps),
    `checkpoints/step_<N>/` (Accelerate state, written atomically) and `final/` (safetensors + config).

    Ctrl-C or SIGTERM finishes the current optimiser step, saves its checkpoint and raises `TrainingInterrupted`
    (a `KeyboardInterrupt`); `resume_from_checkpoint="latest"` continues from there.
    """
    args = args.resolved(spec.training_defaults)
    args.validate()
    if args.init_from:
        args.init_from = str(Path(args.init_from).absolute())  # recorded in args.json: the run is reproducible
        model_config = config_for_init(spec, model_config, args.init_from)
    out = Path(args.output_dir)
    precision_timings = None
    if args.mixed_precision == "auto":
        args.mixed_precision, precision_timings = choose_precision(
            spec, model_config, args, _resume_precision(out, args)
        )
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to.split(",") if args.report_to else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
        dynamo_backend="inductor" if args.torch_compile else None,
    )
    if args.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError("fp16 is not supported on CPU (about 1 GFLOP/s here); use --mixed_precision bf16 or no.")
    resume_dir = _resolve_resume(out, args.resume_from_checkpoint)
    if resume_dir is None and _complete_checkpoints(out):  # checked on every rank, before any expensive work
        raise ValueError(
            f"{out} already holds checkpoints of a run. Continue it with --resume_from_checkpoint latest, "
            "or choose a new --output_dir."
        )
    if resume_dir is not None and args.init_from:
        raise ValueError(
            f"--init_from starts a new run, but --resume_from_checkpoint continues the run in {out} from "
            f"{resume_dir.name}: drop --init_from (the checkpoint holds the weights) or choose a new --output_dir."
        )

    global_batch = args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    lr_multiplier = getattr(model_config, "learning_rate_multiplier", 1.0)  # e.g. MSBReg: x K views
    peak_lr = args.learning_rate or scaled_lr(args.base_learning_rate, global_batch) * lr_multiplier
    if args.cpu_keep_freed_memory and accelerator.device.type == "cpu":
        keep_freed_cpu_memory()
    loader, dataset = _build_loader(spec, model_config, args, accelerator)
    steps_per_epoch = None if args.streaming else _steps_from_epochs(args, len(dataset), len(loader), accelerator)
    set_seed(args.seed)
    model = spec.model_class(model_config)
    # recorded once built: a model may fill config fields from what it reads (TEC: its base model's width and heads)
    run_record = _run_record(spec, model.config, args, accelerator, peak_lr, global_batch)
    run_record["derived"]["steps_per_epoch"] = steps_per_epoch
    if resume_dir is not None:  # before loading any state: another model or dataset is refused by name
        run_record["resumes"] = check_resume(resume_dir, run_record)
    model.prepare_for_pretraining(resumed=resume_dir is not None or bool(args.init_from))
    if args.init_from:
        load_init_weights(model, args.init_from)
    optimizer = build_optimizer(args.optimizer, model, peak_lr, args, accelerator.device)
    if args.streaming:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    warmup = args.warmup_steps if args.warmup_steps is not None else round(args.warmup_ratio * args.max_steps)

    def lr_at(step: int) -> float:
        return cosine_with_warmup(step, args.max_steps, warmup, peak_lr, args.min_learning_rate)

    def weight_decay_at(step: int) -> float:  # DINO: a cosine from weight_decay to weight_decay_end, no warm-up
        if args.weight_decay_end is None:
            return args.weight_decay
        return cosine_with_warmup(step, args.max_steps, 0, args.weight_decay, args.weight_decay_end)

    # skipped_files: unreadable file -> reason, each counted once in skipped_images
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "images_seen": 0, "skipped_images": 0, "skipped_files": {}}
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        state = {**state, **json.loads((resume_dir / META).read_text())["state"]}
        logger.info("Resumed from %s at step %d", resume_dir, state["step"])
    metrics = _MetricsWriter(out / "metrics.jsonl", accelerator.is_main_process, resume_step=state["step"])
    if accelerator.is_main_process:
        if precision_timings is not None:
            run_record["derived"]["mixed_precision_auto"] = precision_timings
        _write_json(out / "args.json", run_record)
    if args.report_to:
        accelerator.init_trackers(spec.name, config={k: v for k, v in args.to_dict().items() if v is not None})

    unwrapped = accelerator.unwrap_model(model)
    knn = None
    if args.eval_every:
        knn = OnlineKNN(
            args.eval_dataset,
            args.eval_label_column,
            input_size(model_config),
            spec.feature_pool,
            args.eval_max_images,
        )
    alarms = CollapseAlarms(warmup)

    def monitor(record: dict) -> dict:
        online = knn(unwrapped.get_export_backbone(), floor=record["step"] == 0)
        if record["step"] == 0:
            logger.info(
                "Online k-NN at step 0: %.2f %% (calibrated floor: %.2f %%)", online["knn_top1"], online["knn_floor"]
            )
        return {**record, **online}

    if knn is not None and state["step"] == 0:
        start_record = monitor({"step": 0, "epoch": 0})
        metrics.write(start_record)
        if args.report_to:
            accelerator.log(start_record, step=0)
    model.train()
    progress = tqdm(
        total=args.max_steps,
        initial=state["step"],
        desc=f"pretrain {spec.name}",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    window: list[dict[str, torch.Tensor]] = []
    window_stats: dict[str, float] = {}
    last_knn = None
    window_images, window_failures = 0, []
    interval: list[dict[str, float]] = []  # the losses of each step since the last logged one (`logging_steps`)
    interval_images, interval_start = 0, time.perf_counter()
    _set_schedules(optimizer, lr_at(state["step"]), weight_decay_at(state["step"]))
    with StopOnSignal(accelerator) as stop:
        while state["step"] < args.max_steps:
            batches = _epoch_batches(loader, dataset, accelerator, state, args.streaming)
            fresh_epoch, seen = state["batches_in_epoch"] == 0, 0
            for batch in batches:
                seen += 1
                window_failures += batch.pop(SKIPPED, [])
                # model-side randomness (dropout, ...) is a pure function of (seed, step, micro-batch, rank)
                torch.manual_seed(_step_seed(args.seed, state["step"], len(window), accelerator.process_index))
                with accelerator.accumulate(model):
                    output = model(**batch)
                    _check_finite(output.loss, accelerator, state, out)
                    accelerator.backward(output.loss)
                    if accelerator.sync_gradients and args.max_grad_norm:
                        if args.clip_per_tensor:
                            clip_grad_norm_per_tensor_(model.parameters(), args.max_grad_norm)
                        else:
                            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state["batches_in_epoch"] += 1
                window.append({k: v.detach().float() for k, v in output.items() if k.startswith("loss")})
                if args.alarms and accelerator.sync_gradients:  # statistics of the step's last micro-batch
                    window_stats = collapse_statistics(output, unwrapped)
                window_images += next(iter(batch.values())).shape[0]
                if not accelerator.sync_gradients:
                    continue
                state["step"] += 1
                unwrapped.post_optimizer_step(state["step"], args.max_steps)
                interval.append(_reduce_window(window, accelerator))
                counts = torch.tensor([window_images, len(window_failures)], device=accelerator.device)
                images, failed = (int(c) for c in accelerator.reduce(counts, "sum").tolist())
                state["images_seen"] += images
                interval_images += images
                if failed:  # the same total on every process: all of them take part in the gather
                    _record_skipped(window_failures, accelerator, state)
                if args.alarms:
                    alarms.check(state["step"], window_stats)
                last = state["step"] == args.max_steps
                measure = knn is not None and (state["step"] % args.eval_every == 0 or last)
                stopping = stop.requested()  # Ctrl-C / SIGTERM: this step is complete; keep it
                if measure or stopping or last or state["step"] % args.logging_steps == 0:
                    record = {
                        "step": state["step"],
                        "epoch": state["epoch"],
                        **_mean_losses(interval),
                        "lr": optimizer.param_groups[0]["lr"],
                        "images_seen": state["images_seen"],
                        "images_per_sec": round(interval_images / (time.perf_counter() - interval_start), 2),
                        "skipped_images": state["skipped_images"],
                        **(window_stats if args.alarms else {}),
                    }
                    if measure:
                        record = monitor(record)
                    metrics.write(record)
                    if args.report_to:
                        accelerator.log(record, step=state["step"])
                    postfix = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}"}
                    last_knn = record.get("knn_top1", last_knn)
                    if last_knn is not None:
                        postfix["knn"] = f"{last_knn:.1f}%"
                    progress.set_postfix(postfix, refresh=False)
                    interval, interval_images, interval_start = [], 0, time.perf_counter()
                progress.update(1)
                _set_schedules(optimizer, lr_at(state["step"]), weight_decay_at(state["step"]))
                saved = state["step"] % args.save_steps == 0 or last
                if saved:
                    save_checkpoint(accelerator, out, state, args.save_total_limit)
                window, window_images, window_failures = [], 0, []
                if last:
                    break
                if stopping:
                    if not saved:
                        save_checkpoint(accelerator, out, state, args.save_total_limit)
                    progress.close()
                    accelerator.end_training()
                    checkpoint = out / CHECKPOINTS / f"step_{state['step']}"
                    raise TrainingInterrupted(stop.signal_name, state["step"], checkpoint)
            else:
                if fresh_epoch and not seen:
                    raise ValueError(
                        f"{args.dataset} yields no batch of {args.batch_size} images: it is empty or smaller than one batch."
                    )
                state["epoch"] += 1
                state["batches_in_epoch"] = 0
    progress.close()
    if state["skipped_files"] and accelerator.is_main_process:
        _summarise_skipped(out, state["skipped_files"])
    final = out / "final"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped.save_pretrained(tmp)
        shutil.copyfile(out / "args.json", tmp / "training_args.json")
        _replace_dir(tmp, final)
        curves = plot_training_curves(out)
        if curves is not None:
            logger.info("Loss and online k-NN curves: %s", curves)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _build_loader(spec: MethodSpec, model_config, args: TrainingArguments, accelerator: Accelerator):
    views = args.build_views(spec, model_config)
    source = load_image_source(
        args.dataset,
        args.train_split,
        config_name=args.dataset_config,
        image_column=args.image_column,
        streaming=args.streaming,
    )  # built-in sets stay at their native 32 px: the view resizes to the model's input size
    if args.streaming:
        dataset = StreamingViews(
            source, views, args.batch_size, args.seed, accelerator.process_index, accelerator.num_processes
        )
        loader = DataLoader(dataset, batch_size=None, num_workers=args.num_workers, worker_init_fn=ignore_stop_signals)
        return loader, dataset
    dataset = ViewsDataset(source, views, seed=args.seed)
    needed = args.batch_size * accelerator.num_processes
    if len(dataset) < needed:
        raise ValueError(
            f"The dataset has {len(dataset)} images, fewer than one batch across processes ({needed}). "
            "Lower --batch_size or use more data."
        )
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=_collate,
        num_workers=args.num_workers,  # workers are re-created each epoch, so they see the new augmentation epoch
        worker_init_fn=ignore_stop_signals,
    )
    return loader, dataset


def _steps_from_epochs(args: TrainingArguments, images: int, batches: int, accelerator: Accelerator) -> int:
    """Optimiser steps per epoch of a map-style dataset; with `num_train_epochs`, sets `args.max_steps` from them.

    Args:
        args: The run's arguments (`max_steps` None or the number the epochs must give).
        images: Images in the dataset.
        batches: Batches per epoch of the whole dataset (`len(loader)`, before it is split across processes).
        accelerator: The run's Accelerator (number of processes).

    Raises:
        ValueError: `max_steps` was given too and differs from what the epochs give; the message names both.
    """
    per_epoch = max(1, batches // accelerator.num_processes // args.gradient_accumulation_steps)
    if args.num_train_epochs is None:
        return per_epoch
    steps = math.ceil(args.num_train_epochs * per_epoch)
    how = (
        f"{images} images at a global batch of "
        f"{args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes}: {per_epoch} steps per epoch"
    )
    if args.max_steps is not None and args.max_steps != steps:
        raise ValueError(
            f"--num_train_epochs {args.num_train_epochs:g} gives {steps} optimiser steps ({how}) but --max_steps is "
            f"{args.max_steps}: give only one of them."
        )
    args.max_steps = steps
    logger.info("--num_train_epochs %g: %d optimiser steps (%s)", args.num_train_epochs, steps, how)
    return per_epoch


def _mean_losses(steps: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each loss term over the steps of a logging interval."""
    keys = dict.fromkeys(k for step in steps for k in step)
    return {k: sum(s[k] for s in steps if k in s) / sum(k in s for s in steps) for k in keys}


def _collate(batch):
    # ViewsDataset.__getitems__ already returns the whole batch
    return batch if isinstance(batch, dict) else torch.utils.data.default_collate(batch)


def _epoch_batches(loader, dataset, accelerator: Accelerator, state: dict, streaming: bool):
    dataset.set_epoch(state["epoch"])
    skip = state["batches_in_epoch"]
    if streaming:
        device = accelerator.device
        batches = (
            {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
            for b in loader
        )
        for _ in range(skip):
            next(batches, None)
        return batches
    loader.set_epoch(state["epoch"])
    return accelerator.skip_first_batches(loader, skip) if skip else loader


def _record_skipped(failures: list[list[str]], accelerator: Accelerator, state: dict) -> None:
    """Adds a step's unreadable files (`[file, reason]`, from every process) to the run's, warning once per file."""
    if accelerator.num_processes > 1:
        failures = gather_object(failures)
    for name, reason in failures:
        if name not in state["skipped_files"]:
            state["skipped_files"][name] = reason
            if accelerator.is_main_process:
                logger.warning(
                    "Skipping unreadable image %s: %s (warned once; it is left out whenever it comes up)", name, reason
                )
    state["skipped_images"] = len(state["skipped_files"])


def _summarise_skipped(out: Path, files: dict[str, str]) -> None:
    """End-of-run summary of the unreadable files, all of them listed in `skipped_images.txt`."""
    listing = out / "skipped_images.txt"
    listing.write_text("".join(f"{name}\t{reason}\n" for name, reason in sorted(files.items())))
    shown = ", ".join(sorted(files)[:5]) + (", ..." if len(files) > 5 else "")
    logger.warning(
        "%d unreadable image(s) were left out of this run (%s); every one is listed in %s. Fix or remove them.",
        len(files),
        shown,
        listing,
    )


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 64 + micro) * 4096 + rank & 0x7FFF_FFFF_FFFF_FFFF


def _set_schedules(optimizer, lr: float, weight_decay: float) -> None:
    """Sets every group's lr (times its `lr_scale`) and the weight decay of the decayed groups (`param_groups`).

    A checkpoint written before groups carried `decay` has one decayed group, the first.
    """
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if group.get("decay", i == 0):
            group["weight_decay"] = weight_decay


def _resume_precision(out: Path, args: TrainingArguments) -> str | None:
    """The precision a resumed run chose at its start (`--mixed_precision auto` keeps it), else None."""
    resume_dir = _resolve_resume(out, args.resume_from_checkpoint)
    if resume_dir is None:
        return None
    return json.loads((resume_dir / META).read_text()).get("mixed_precision")


def _reduce_window(window: list[dict[str, torch.Tensor]], accelerator: Accelerator) -> dict[str, float]:
    """Mean of each loss term over the accumulation window and across processes."""
    keys = list(window[0])
    local = torch.stack([torch.stack([w[k] for w in window]).mean() for k in keys]).to(accelerator.device)
    return {k: v.item() for k, v in zip(keys, accelerator.reduce(local, "mean"))}


def _check_finite(loss: torch.Tensor, accelerator: Accelerator, state: dict, out: Path) -> None:
    bad = torch.tensor(float(not torch.isfinite(loss.detach()).item()), device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    if bad.item() > 0:
        last = find_latest_checkpoint(out)
        where = f"The last good checkpoint is {last}." if last else "No checkpoint was written yet."
        raise NonFiniteLossError(
            f"The loss became {loss.item()} at step {state['step'] + 1}; this step's update was not applied. {where} "
            "Lower --learning_rate/--base_learning_rate, set --max_grad_norm 1.0 or use --mixed_precision no, then "
            "continue with --resume_from_checkpoint latest."
        )


class _MetricsWriter:
    """Appends one JSON line per optimiser step; on resume, drops lines of steps after the checkpoint."""

    def __init__(self, path: Path, active: bool, resume_step: int):
        self.path, self.active = path, active
        if not active:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step and path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.active:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(accelerator: Accelerator, out: Path, state: dict, keep: int | None) -> Path:
    """Writes `checkpoints/step_<N>` atomically: into a temporary folder, then one rename.

    A run killed while saving leaves the previous checkpoints untouched and loadable.
    """
    root = out / CHECKPOINTS
    final, tmp = root / f"step_{state['step']}", root / f".tmp_step_{state['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(
            tmp / META,
            {
                "state": state,
                "num_processes": accelerator.num_processes,
                "mixed_precision": accelerator.mixed_precision,
            },
        )
        if (out / "args.json").is_file():  # the checkpoint says which run it continues (`resume.check_resume`)
            shutil.copyfile(out / "args.json", tmp / RUN_RECORD)
        _replace_dir(tmp, final)
        if keep:
            for old in _complete_checkpoints(out)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _complete_checkpoints(out: Path) -> list[Path]:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / META).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def find_latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint of a run directory, or None."""
    found = _complete_checkpoints(Path(out))
    return found[-1] if found else None


def _resolve_resume(out: Path, value: str | None) -> Path | None:
    if not value:
        return None
    if value == "latest":
        latest = find_latest_checkpoint(out)
        if latest is None:
            logger.info("--resume_from_checkpoint latest: no checkpoint in %s yet, starting a new run.", out)
        return latest
    path = Path(value)
    if not (path / META).is_file():
        raise ValueError(
            f"{path} is not a complete ssl_hf checkpoint (no {META}). Use 'latest' or a "
            f"{CHECKPOINTS}/step_<N> folder of a run."
        )
    return path


def _replace_dir(src: Path, dst: Path) -> None:
    """Moves `src` to `dst`, replacing it; `dst` is complete before and after (rename is atomic)."""
    _fsync_tree(src)
    trash = dst.with_name(f".trash_{dst.name}")
    shutil.rmtree(trash, ignore_errors=True)
    if dst.exists():
        os.replace(dst, trash)
    os.replace(src, dst)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with file.open("rb") as f:
                os.fsync(f.fileno())


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _run_record(spec, model_config, args, accelerator, peak_lr: float, global_batch: int) -> dict:
    import accelerate
    import datasets
    import transformers

    return {
        "method": spec.name,
        "model_config": model_config.to_dict(),
        "training": args.to_dict(),
        "derived": {
            "peak_learning_rate": peak_lr,
            "global_batch_size": global_batch,
            "learning_rate_multiplier": getattr(model_config, "learning_rate_multiplier", 1.0),
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "datasets": datasets.__version__,
        },
        "lr_rule": "peak = learning_rate if given, else base_learning_rate * global_batch / 256 * multiplier",
    }
