"""In-memory datasets: uint8 image tensors, a seeded loader, and batch-wise augmentation on the device."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from softlabels.data.base import (
    STREAM_CROP,
    STREAM_FLIP,
    STREAM_ORDER,
    DataBundle,
    DatasetInfo,
    option,
    positive_int,
)
from softlabels.data.base import generator as seeded_generator
from softlabels.data.splits import num_batches, split_seed, subset_and_split
from softlabels.errors import DataError, UserError


def random_crop_flip(
    images: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip, batch-wise, on the images' device.

    Args:
        images: (B, C, H, W), any dtype (uint8 in the loader; padding is value 0, i.e. black).
        offsets: int64 (B, 2) top/left corner of the crop in the padded image, each in
            [0, 2 * padding]; ``padding`` means "no shift". None = no crop.
        flips: bool (B,), True flips that sample left-right. None = no flip.
        padding: zero padding on each side, in pixels.
    Returns:
        (B, C, H, W) tensor of the same dtype and device.
    One ``F.pad`` plus one ``torch.gather`` with a per-sample flat index; no Python loop over samples.
    """
    if offsets is None and flips is None:
        return images
    batch, channels, height, width = images.shape
    device = images.device
    if offsets is None or padding == 0:
        padding = 0
        top = left = torch.zeros(batch, 1, dtype=torch.long, device=device)
    else:
        offsets = offsets.to(device=device, dtype=torch.long)
        top, left = offsets[:, 0:1], offsets[:, 1:2]
        images = F.pad(images, (padding, padding, padding, padding))
    padded_h, padded_w = height + 2 * padding, width + 2 * padding
    rows = top + torch.arange(height, device=device)  # (B, H)
    cols = torch.arange(width, device=device).expand(batch, width)
    if flips is not None:
        cols = torch.where(flips.to(device).view(batch, 1), width - 1 - cols, cols)
    cols = left + cols  # (B, W)
    flat = (rows.unsqueeze(2) * padded_w + cols.unsqueeze(1)).view(batch, 1, height * width)
    flat = flat.expand(batch, channels, height * width)
    out = torch.gather(images.reshape(batch, channels, padded_h * padded_w), 2, flat)
    return out.view(batch, channels, height, width)


class InMemoryLoader:
    """Batches ``(images, targets, indices)`` from uint8 images held in memory (on ``device``).

    Yields:
        images: float32 (B, C, H, W) on ``device``, ``(x / 255 - mean) / std``.
        targets: int64 (B,) on ``device``.
        indices: int64 (B,) on ``device``, positions in the full set ``images`` (original indices).
    Attributes: ``num_samples`` (size of the sample set), ``full_size`` (size of the full set the
    indices refer to), ``indices`` (int64 (num_samples,) sorted, CPU), ``dataset_labels`` (int64
    (num_samples,) CPU, labels aligned with ``indices``), ``batch_size``, ``shuffle``, ``augment``,
    ``drop_last``, ``epoch``. ``len(loader)`` is the number of batches.

    Order and augmentation of an epoch are pure functions of ``(seed, epoch)``: call
    :meth:`set_epoch` before iterating (the epoch stays fixed otherwise). The random crop offsets
    and flips are drawn once per epoch for every position in the epoch's order. With ``aug_seed``
    they are drawn once per epoch for every SAMPLE of the full set from ``(aug_seed, epoch)``
    instead: a sample's augmentation then no longer depends on ``seed`` (which keeps the order),
    so runs with different seeds see the same augmented image of each sample in each epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        augment: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        aug_seed: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError("mean and std need one value per channel")
        if batch_size < 1 or crop_padding < 0:
            raise ValueError("batch_size must be >= 1 and crop_padding >= 0")
        self.device = torch.device(device)
        self.images = images.to(self.device, non_blocking=True)
        self.labels = labels.long().to(self.device, non_blocking=True)
        self.full_size = int(images.shape[0])
        cpu_indices = torch.arange(self.full_size) if indices is None else indices.long().cpu()
        self.indices = cpu_indices
        self.dataset_labels = labels.long().cpu()[cpu_indices]
        self.num_samples = int(cpu_indices.numel())
        self._device_indices = cpu_indices.to(self.device, non_blocking=True)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.augment = bool(augment) and (self.crop_padding > 0 or self.flip)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.aug_seed = None if aug_seed is None else int(aug_seed)
        self._fingerprint: str | None = None
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device)
        self._shift = (mean_t / std_t).view(1, -1, 1, 1).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, self.drop_last)

    def shard(self, rank: int, world_size: int) -> None:
        """Deliver only this process's share of every batch: positions ``rank::world_size``.

        ``batch_size`` stays the global batch; order and augmentation stay those of the
        single-process run, so ``world_size`` processes together see exactly its batches.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

    def epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(order, offsets, flips) of the current epoch, on the device.

        order: int64 (num_samples,) original indices in visiting order; offsets: int64
        (num_samples, 2) or None; flips: bool (num_samples,) or None.
        """
        n = self.num_samples
        if self.shuffle:
            perm = torch.randperm(n, generator=seeded_generator(self.seed, self.epoch, STREAM_ORDER))
            order = self._device_indices[perm.to(self.device, non_blocking=True)]
        else:
            order = self._device_indices.clone()  # batches are views: keep the stored indices safe
        offsets = flips = None
        # without aug_seed: one draw per position of the order; with it: one per sample of the full set
        seed, draws = (self.seed, n) if self.aug_seed is None else (self.aug_seed, self.full_size)
        if self.augment and self.crop_padding > 0:
            gen = seeded_generator(seed, self.epoch, STREAM_CROP)
            offsets = torch.randint(0, 2 * self.crop_padding + 1, (draws, 2), generator=gen)
            offsets = offsets.to(self.device, non_blocking=True)
        if self.augment and self.flip:
            gen = seeded_generator(seed, self.epoch, STREAM_FLIP)
            flips = (torch.randint(0, 2, (draws,), generator=gen) == 1).to(self.device, non_blocking=True)
        if self.aug_seed is not None:
            offsets = None if offsets is None else offsets[order]
            flips = None if flips is None else flips[order]
        return order, offsets, flips

    def fingerprint(self) -> str:
        """sha256 (hex) of the images this loader draws from: the uint8 tensor (shape and bytes) and the
        sample indices. Computed once per loader (measured 0.2 s for Fashion-MNIST, 1 s for CIFAR, 2 CPUs)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            images = self.images.detach().cpu().contiguous()
            h.update(repr((str(images.dtype), tuple(images.shape))).encode())
            h.update(memoryview(images.numpy()).cast("B"))
            h.update(self.indices.numpy().astype("<i8").tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order, offsets, flips = self.epoch_plan()
        for b in range(len(self)):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, self.num_samples)
            step = self.world_size
            first = start + self.rank
            idx = order[first:stop:step]
            x = self.images[idx]
            if offsets is not None or flips is not None:
                x = random_crop_flip(
                    x,
                    None if offsets is None else offsets[first:stop:step],
                    None if flips is None else flips[first:stop:step],
                    self.crop_padding,
                )
            x = x.float().mul_(self._scale).sub_(self._shift)
            yield x, self.labels[idx], idx

    def __repr__(self) -> str:
        return (
            f"InMemoryLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, augment={self.augment}, device={self.device})"
        )


def channel_stats(images: torch.Tensor, max_images: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images in [0, 1] units (first ``max_images``)."""
    x = images[:max_images].double() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def check_arrays(name: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, split: str) -> None:
    """Raise DataError unless images are uint8 (N, C, H, W) and labels int64 (N,) in [0, num_classes)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(f"{name} {split} images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.dim() != 1 or labels.numel() != images.shape[0]:
        raise DataError(f"{name} {split}: {images.shape[0]} images but {labels.numel()} labels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"{name} {split} labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}"
        )


def in_memory_bundle(
    cfg: Any,
    *,
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    seed: int,
    class_names: Sequence[str] = (),
) -> DataBundle:
    """Build the train/val/test :class:`InMemoryLoader` s of a dataset held as uint8 tensors.

    Args:
        cfg: the data config (``train_subset``, ``val_split``, ``batch_size``, ``eval_batch_size``,
            ``augment``, ``crop_padding``, ``flip``, ``drop_last``, ``aug_seed``).
        train, test: (uint8 images (N, C, H, W), int64 labels (N,)) of the full original sets.
        mean, std: per-channel normalisation in [0, 1] pixel units.
    The full training images are moved to ``device`` once and shared by the train and val loaders.
    """
    train_images, train_labels = train[0], train[1].long()
    test_images, test_labels = test[0], test[1].long()
    check_arrays(name, train_images, train_labels, num_classes, "train")
    check_arrays(name, test_images, test_labels, num_classes, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{name}: train images {tuple(train_images.shape[1:])} and test images "
            f"{tuple(test_images.shape[1:])} differ in shape"
        )
    batch_size = positive_int(cfg, "batch_size")
    eval_batch_size = positive_int(cfg, "eval_batch_size", batch_size)
    crop_padding = positive_int(cfg, "crop_padding", 4, minimum=0)
    augment = bool(option(cfg, "augment", True))
    flip = bool(option(cfg, "flip", True))
    drop_last = bool(option(cfg, "drop_last", False))
    train_idx, val_idx = subset_and_split(
        train_labels, option(cfg, "train_subset", None), option(cfg, "val_split", 0), split_seed(cfg, seed)
    )
    if drop_last and train_idx.numel() < batch_size:
        raise UserError(
            f"data.drop_last is true but the training set has only {train_idx.numel()} images, "
            f"fewer than data.batch_size = {batch_size}: the train loader would be empty"
        )
    train_images = train_images.to(device, non_blocking=True)
    train_labels = train_labels.to(device, non_blocking=True)
    common = {"mean": tuple(mean), "std": tuple(std), "device": device, "seed": seed}
    train_loader = InMemoryLoader(
        train_images,
        train_labels,
        train_idx,
        batch_size=batch_size,
        shuffle=True,
        augment=augment,
        crop_padding=crop_padding,
        flip=flip,
        drop_last=drop_last,
        aug_seed=option(cfg, "aug_seed", None),
        **common,
    )
    val_loader = None
    if val_idx.numel():
        val_loader = InMemoryLoader(train_images, train_labels, val_idx, batch_size=eval_batch_size, **common)
    test_loader = InMemoryLoader(test_images, test_labels, None, batch_size=eval_batch_size, **common)
    info = DatasetInfo(
        name=name,
        num_classes=int(num_classes),
        in_channels=int(train_images.shape[1]),
        image_size=int(train_images.shape[2]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        train_size=int(train_idx.numel()),
        val_size=int(val_idx.numel()),
        test_size=int(test_images.shape[0]),
        full_train_size=int(train_images.shape[0]),
        full_test_size=int(test_images.shape[0]),
        class_names=tuple(class_names),
    )
    return DataBundle(info=info, train=train_loader, val=val_loader, test=test_loader)
