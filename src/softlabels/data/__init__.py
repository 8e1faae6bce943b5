"""Datasets and loaders: ``build_data(cfg, device, seed) -> DataBundle``.

Every loader yields ``(images, targets, indices)``: images float32 (B, C, H, W) on the device,
normalised with the dataset mean/std; targets int64 (B,); indices int64 (B,), the samples' positions
in the full original training (or test) set. ``loader.set_epoch(epoch)`` makes an epoch's order and
augmentation a pure function of (seed, epoch).

Each module of this package registers its builder with ``@register_dataset``; they are imported
automatically, so adding a dataset is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import torch

from softlabels.data.base import DATASETS, DataBundle, DatasetInfo, Loader, register_dataset
from softlabels.data.idx import read_idx
from softlabels.data.memory import InMemoryLoader, random_crop_flip
from softlabels.data.splits import stratified_split, subset_and_split
from softlabels.data.synthetic import SyntheticSpec, make_synthetic

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetInfo",
    "InMemoryLoader",
    "Loader",
    "SyntheticSpec",
    "build_data",
    "list_datasets",
    "make_synthetic",
    "random_crop_flip",
    "read_idx",
    "register_dataset",
    "stratified_split",
    "subset_and_split",
]

_HELPERS = {"base", "idx", "memory", "splits"}


def _import_all() -> None:
    """Import every dataset module once so that their ``@register_dataset`` decorators run."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in _HELPERS:
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()


def list_datasets() -> list[str]:
    """Names accepted as ``data.name``, sorted."""
    return DATASETS.names()


def build_data(cfg: Any, device: torch.device | str | None = None, seed: int = 0) -> DataBundle:
    """Build the dataset ``cfg.name`` and its train/val/test loaders.

    Args:
        cfg: the data config (attributes ``name``, ``root``, ``download``, ``train_subset``,
            ``val_split``, ``batch_size``, ``eval_batch_size``, ``num_workers``, ``augment``,
            ``crop_padding``, ``flip``, ``drop_last``, ``synthetic``); absent optional ones take defaults.
        device: where batches are delivered (default CPU).
        seed: seeds the subset, the validation split, the order and the augmentation.
    Raises:
        UserError / DataError with a one-line message (unknown name, bad sizes, missing files).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    return DATASETS.get(str(cfg.name))(cfg, device, int(seed))
