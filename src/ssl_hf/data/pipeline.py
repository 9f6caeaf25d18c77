"""Torch datasets that turn an `ImageSource` into batches of views, decoded and augmented on the fly."""

import logging
from collections.abc import Callable, Iterator

import datasets
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from .datasets import ImageSource


logger = logging.getLogger(__name__)

ViewFn = Callable[[list[torch.Tensor], list[np.random.Generator]], dict[str, torch.Tensor]]


def sample_rngs(seed: int, epoch: int, indices) -> list[np.random.Generator]:
    """One generator per sample, a pure function of `(seed, epoch, index)`."""
    return [np.random.default_rng((seed, epoch, int(i))) for i in indices]


SKIPPED = "skipped_images"


class _Counting:
    """Keeps track of images that could not be decoded.

    `skipped_files` maps each unreadable file this process met to the reason (`num_skipped` counts them, each file
    once). Each batch also carries its own `[file, reason]` list under `SKIPPED`, so that the training loop can warn
    once per file and count unique files across DataLoader workers, processes, epochs and resumed runs. The loop
    removes the key before calling the model.
    """

    @property
    def skipped_files(self) -> dict[str, str]:
        if "_skipped_files" not in self.__dict__:
            self._skipped_files: dict[str, str] = {}
        return self._skipped_files

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_files)

    def _views(self, images: list, indices, epoch: int, failures: list[list[str]]) -> dict:
        good = [k for k, im in enumerate(images) if im is not None]
        self.skipped_files.update(failures)
        if not good:
            raise RuntimeError(
                f"Every image of a batch failed to decode (sample indices {list(indices)[:8]}...; first error: "
                f"{': '.join(failures[0]) if failures else 'unknown'}). The dataset's files look corrupt or are not "
                "images; check the paths or the --image_column."
            )
        views = self.view_fn([images[k] for k in good], sample_rngs(self.seed, epoch, [indices[k] for k in good]))
        return {**views, SKIPPED: failures}


class ViewsDataset(_Counting, Dataset):
    """Map-style dataset whose `__getitems__` decodes and augments a whole batch at once.

    Args:
        source: The images.
        view_fn: A view preset from `ssl_hf.data.views`.
        seed: Augmentation seed.
    """

    def __init__(self, source: ImageSource, view_fn: ViewFn, seed: int = 0):
        self.source, self.view_fn, self.seed, self.epoch = source, view_fn, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch used to seed augmentations."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source.dataset)

    def __getitem__(self, index: int) -> dict:
        return {k: v[0] if k != SKIPPED else v for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict:
        failures: list[list[str]] = []
        images, _ = self.source.read(indices, failures=failures)
        return self._views(images, indices, self.epoch, failures)


class StreamingViews(_Counting, IterableDataset):
    """Iterable dataset over a streaming source, sharded per process, yielding whole batches.

    Args:
        source: A streaming `ImageSource`.
        view_fn: A view preset.
        batch_size: Images per yielded batch.
        seed: Shuffle and augmentation seed.
        rank: This process's index.
        world_size: Number of processes.
        shuffle_buffer: Size of the streaming shuffle buffer (0 = no shuffle).
    """

    def __init__(
        self,
        source: ImageSource,
        view_fn: ViewFn,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 1000,
    ):
        from datasets.distributed import split_dataset_by_node

        self.source, self.view_fn, self.batch_size, self.seed, self.epoch = source, view_fn, batch_size, seed, 0
        self.rank = rank
        ds = source.dataset
        if not isinstance(ds, datasets.IterableDataset):
            ds = ds.to_iterable_dataset(num_shards=max(world_size, 1))
        if shuffle_buffer:
            ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
        self.stream = split_dataset_by_node(ds, rank=rank, world_size=world_size) if world_size > 1 else ds

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch (reshuffles the stream and reseeds augmentations)."""
        self.epoch = epoch
        self.stream.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        column = self.source.image_column
        values, position = [], 0
        for row in self.stream:
            values.append(row[column])
            if len(values) == self.batch_size:
                # sample ids for seeding: unique per rank and position in this epoch's stream
                ids = [(position + k) * 4096 + self.rank for k in range(len(values))]
                failures: list[list[str]] = []
                yield self._views(self.source.decode(values, failures), ids, self.epoch, failures)
                values, position = [], position + len(values)
