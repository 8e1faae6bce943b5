"""A ``DataLoader`` over indexed items whose order and augmentation are pure functions of (seed, epoch).

Shared by the file-backed datasets (ImageNet folders, any ``torch.utils.data.Dataset``): items are
read by key ``(position, epoch)`` so a worker can seed each sample's random transform from
(seed, epoch, index), which keeps resume exact with any number of workers.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from softlabels.data.base import STREAM_LOADER, STREAM_ORDER
from softlabels.data.base import generator as seeded_generator
from softlabels.data.splits import num_batches
from softlabels.errors import UserError


class EpochSampler(Sampler):
    """Yields ``(position, epoch)`` for positions 0..n-1, shuffled by (seed, epoch) when ``shuffle``."""

    def __init__(self, n: int, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0
        self.rank, self.world_size = 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=seeded_generator(self.seed, self.epoch, STREAM_ORDER)).tolist()
        else:
            order = range(self.n)
        epoch = self.epoch
        return ((p, epoch) for p in list(order)[self.rank :: self.world_size])


class EpochLoader:
    """Batches ``(images (B, ...) float32, targets (B,) int64, indices (B,) int64)`` on ``device``.

    ``items[(position, epoch)]`` returns ``(image, target, original index)``; ``indices`` are the
    original positions of the items (CPU int64), ``dataset_labels`` their labels (CPU int64),
    ``full_size`` the size of the whole original split. Same interface as ``InMemoryLoader``:
    :meth:`set_epoch`, :meth:`shard`, ``len()`` = batches per epoch.
    """

    def __init__(
        self,
        items: Dataset,
        dataset_labels: torch.Tensor,
        indices: torch.Tensor,
        full_size: int,
        *,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        augment: bool = False,
        drop_last: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.full_size = int(full_size)
        self.indices = indices.long().cpu()
        self.dataset_labels = dataset_labels.long().cpu()
        self.num_samples = int(self.indices.numel())
        self.batch_size, self.shuffle, self.augment, self.drop_last = int(batch_size), shuffle, augment, drop_last
        self.items = items
        self.sampler = EpochSampler(self.num_samples, shuffle, seed)
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.loader = self._make_loader(self.batch_size)

    def _make_loader(self, per_process_batch: int) -> DataLoader:
        return DataLoader(
            self.items,
            batch_size=per_process_batch,
            sampler=self.sampler,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.num_workers > 0,
            drop_last=self.drop_last,
            generator=seeded_generator(self.seed, STREAM_LOADER),
        )

    def shard(self, rank: int, world_size: int) -> None:
        """This process reads positions ``rank::world_size`` of each epoch's order, in batches of
        ``batch_size / world_size`` (the global batch must divide evenly)."""
        if self.batch_size % world_size:
            raise UserError(
                f"data.batch_size ({self.batch_size}) must be divisible by the number of processes ({world_size})"
            )
        self.sampler.rank, self.sampler.world_size = int(rank), int(world_size)
        self.loader = self._make_loader(self.batch_size // world_size)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for images, targets, indices in self.loader:
            yield (
                images.to(self.device, non_blocking=True),
                targets.long().to(self.device, non_blocking=True),
                indices.long().to(self.device, non_blocking=True),
            )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={self.num_samples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, num_workers={self.num_workers}, device={self.device})")
