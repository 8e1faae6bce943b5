"""Any map-style ``torch.utils.data.Dataset`` as a softlabels dataset (the adapter for user data).

A builder registered with ``@register_dataset("name")`` may return a :class:`TorchDatasets` instead of a
:class:`~softlabels.data.base.DataBundle`::

    @register_dataset("blobs")
    def blobs(cfg, device, seed):
        return TorchDatasets(train=Blobs("train", transform=augment), test=Blobs("test", transform=plain),
                             train_eval=Blobs("train", transform=plain), num_classes=3)

:func:`torch_dataset_bundle` then applies the built-in sets' stratified ``data.train_subset`` /
``data.val_split`` (the validation images come from ``train_eval``: same items, evaluation transform) and
serves each split through a ``DataLoader`` with ``data.num_workers`` workers and pinned memory on CUDA.
Batches are ``(images float32 (B, C, H, W), targets int64 (B,), indices int64 (B,))`` on the device, indices
being positions in the full train (or test) dataset. The epoch order is a pure function of (seed, epoch) and
each item's transform runs under torch/Python/NumPy RNGs seeded from (seed, epoch, index), so random
augmentation is the same whatever the worker count, and a resumed run sees the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from softlabels.data.base import (
    STREAM_IMAGE_AUG,
    DataBundle,
    DatasetInfo,
    derive_seed,
    option,
    positive_int,
)
from softlabels.data.epoch_loader import EpochLoader
from softlabels.data.splits import split_seed, subset_and_split
from softlabels.errors import DataError, UserError

__all__ = ["DatasetLoader", "TorchDatasets", "torch_dataset_bundle"]


@dataclass
class TorchDatasets:
    """Map-style datasets of one task; each item is ``(image, label)``.

    Attributes:
        train: training items with the training transform (augmentation allowed); ``image`` a float tensor
            (C, H, W) after the transform, ``label`` an int in [0, num_classes).
        test: test items with the evaluation transform.
        train_eval: the same items as ``train`` with the evaluation transform, used for ``data.val_split``
            (default: ``train`` itself).
        num_classes: default ``len(train.classes)`` or max label + 1.
        train_labels: int labels of ``train`` in order (default ``train.targets``/``train.labels``, else read
            from the items once).
        mean, std: the per-channel normalisation your transform applies in [0, 1] pixel units (used to undo it,
            e.g. for corruption evaluation); default 0 and 1 ("not normalised here").
        class_names: default ``train.classes`` when present.
    """

    train: Dataset
    test: Dataset
    train_eval: Dataset | None = None
    num_classes: int | None = None
    train_labels: Sequence[int] | torch.Tensor | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    class_names: Sequence[str] | None = None


class _IndexedItems(Dataset):
    """Items ``(image, target, original index)`` of ``dataset`` at ``indices``, keyed by (position, epoch)."""

    def __init__(self, dataset: Dataset, indices: torch.Tensor, seed: int, name: str) -> None:
        self.dataset, self.indices, self.seed, self.name = dataset, [int(i) for i in indices], int(seed), name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int, int]:
        position, epoch = (key, 0) if isinstance(key, int) else key
        original = self.indices[position]
        item_seed = derive_seed(self.seed, epoch, original, STREAM_IMAGE_AUG)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            random.seed(item_seed)
            np.random.seed(item_seed % (1 << 32))
            try:
                item = self.dataset[original]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        image, target = _unpack(item, self.name, original)
        return image, target, original


def _unpack(item: Any, name: str, index: int) -> tuple[torch.Tensor, int]:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"dataset {name!r} item {index} must be (image, label), got {type(item).__name__}")
    image, target = item[0], item[1]
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.is_floating_point():
        what = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise DataError(
            f"dataset {name!r} item {index}: the image must be a float tensor (C, H, W), got {what}; "
            "end its transform with ToTensor() (and Normalize)"
        )
    return image.float(), int(target)


class DatasetLoader(EpochLoader):
    """A seeded ``DataLoader`` over ``dataset`` positions ``indices``, with the ``InMemoryLoader`` interface.

    Yields ``(images float32 (B, C, H, W), targets int64 (B,), indices int64 (B,))`` on ``device``;
    ``labels`` (CPU) are the labels of the whole dataset. See :class:`EpochLoader`.
    """

    def __init__(self, dataset: Dataset, labels: torch.Tensor, indices: torch.Tensor, *, name: str,
                 seed: int = 0, **loader_options: Any) -> None:
        indices = indices.long().cpu()
        super().__init__(_IndexedItems(dataset, indices, seed, name), labels.long().cpu()[indices], indices,
                         int(labels.numel()), seed=seed, **loader_options)


def _labels_of(dataset: Dataset, given: Any, name: str, split: str) -> torch.Tensor:
    if given is None:
        given = getattr(dataset, "targets", None)
        if given is None:
            given = getattr(dataset, "labels", None)
    if given is None:  # read them from the items (applies the transform once per item)
        given = [_unpack(dataset[i], name, i)[1] for i in range(len(dataset))]
    labels = torch.as_tensor(given).long().flatten().cpu()
    if labels.numel() != len(dataset):
        raise DataError(f"dataset {name!r} {split}: {len(dataset)} items but {labels.numel()} labels")
    return labels


def torch_dataset_bundle(spec: TorchDatasets, cfg: Any, device: torch.device, seed: int, name: str) -> DataBundle:
    """Train/val/test :class:`DatasetLoader` s of ``spec`` for the data config ``cfg`` (see module docstring).

    Raises:
        DataError: empty datasets, labels outside [0, num_classes), images that are not float (C, H, W),
            ``train_eval`` of another length, train/test images of different shapes.
    """
    if not isinstance(spec, TorchDatasets):
        raise UserError(f"dataset {name!r}: the builder must return a DataBundle or a TorchDatasets")
    if len(spec.train) == 0 or len(spec.test) == 0:
        raise DataError(f"dataset {name!r}: the train and test datasets must not be empty")
    train_eval = spec.train_eval if spec.train_eval is not None else spec.train
    if len(train_eval) != len(spec.train):
        raise DataError(f"dataset {name!r}: train_eval has {len(train_eval)} items, train has {len(spec.train)}")
    train_labels = _labels_of(spec.train, spec.train_labels, name, "train")
    test_labels = _labels_of(spec.test, None, name, "test")
    classes = getattr(spec.train, "classes", None)
    num_classes = spec.num_classes or (len(classes) if classes else int(max(train_labels.max(), test_labels.max())) + 1)
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise DataError(f"dataset {name!r} {split} labels must lie in [0, {num_classes}), "
                            f"got {int(labels.min())}..{int(labels.max())}")
    first, _ = _unpack(train_eval[0], name, 0)
    test_first, _ = _unpack(spec.test[0], name, 0)
    if first.shape != test_first.shape:
        raise DataError(f"dataset {name!r}: train images {tuple(first.shape)} and test images "
                        f"{tuple(test_first.shape)} differ in shape")
    channels = int(first.shape[0])
    mean = tuple(float(m) for m in (spec.mean or [0.0] * channels))
    std = tuple(float(s) for s in (spec.std or [1.0] * channels))
    if len(mean) != channels or len(std) != channels:
        raise DataError(f"dataset {name!r}: mean and std need one value per channel ({channels})")

    batch_size = positive_int(cfg, "batch_size")
    eval_batch_size = positive_int(cfg, "eval_batch_size", batch_size)
    num_workers = positive_int(cfg, "num_workers", 0, minimum=0)
    augment = bool(option(cfg, "augment", True))
    drop_last = bool(option(cfg, "drop_last", False))
    train_idx, val_idx = subset_and_split(
        train_labels, option(cfg, "train_subset"), option(cfg, "val_split", 0), split_seed(cfg, seed)
    )
    if drop_last and train_idx.numel() < batch_size:
        raise UserError(f"data.drop_last is true but the training set has only {train_idx.numel()} images, "
                        f"fewer than data.batch_size = {batch_size}")
    common = {"name": name, "device": device, "num_workers": num_workers, "seed": seed}
    train_loader = DatasetLoader(spec.train if augment else train_eval, train_labels, train_idx,
                                 batch_size=batch_size, shuffle=True, augment=augment, drop_last=drop_last, **common)
    val_loader = None
    if val_idx.numel():
        val_loader = DatasetLoader(train_eval, train_labels, val_idx, batch_size=eval_batch_size, **common)
    test_loader = DatasetLoader(spec.test, test_labels, torch.arange(test_labels.numel()),
                                batch_size=eval_batch_size, **common)
    names = spec.class_names if spec.class_names is not None else (classes or ())
    info = DatasetInfo(
        name=name, num_classes=int(num_classes), in_channels=channels, image_size=int(first.shape[-1]),
        mean=mean, std=std, train_size=int(train_idx.numel()), val_size=int(val_idx.numel()),
        test_size=int(test_labels.numel()), full_train_size=int(train_labels.numel()),
        full_test_size=int(test_labels.numel()), class_names=tuple(str(c) for c in names),
    )
    return DataBundle(info=info, train=train_loader, val=val_loader, test=test_loader)
