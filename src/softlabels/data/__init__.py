"""Datasets and loaders: ``build_data(cfg, device, seed) -> DataBundle``.

Every loader yields ``(images, targets, indices)``: images float32 (B, C, H, W) on the device,
normalised with the dataset mean/std; targets int64 (B,); indices int64 (B,), the samples' positions
in the full original training (or test) set. ``loader.set_epoch(epoch)`` makes an epoch's order and
augmentation a pure function of (seed, epoch).

Each module of this package registers its builder with ``@register_dataset(name, config=...)``: the
builder receives the validated config of its own class (a :class:`DataConfig` subclass in the same file,
which also states the class count and channels known without reading data, and checks ``data.root``).
Modules are imported automatically, so adding a dataset is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import torch

from softlabels.data.base import (
    DATASET_CONFIGS,
    DATASETS,
    DataBundle,
    DataConfig,
    DatasetInfo,
    DatasetTraits,
    Loader,
    data_config,
    data_config_class,
    register_dataset,
    validate_data_config,
)
from softlabels.data.idx import read_idx
from softlabels.data.memory import InMemoryLoader, in_memory_bundle, random_crop_flip
from softlabels.data.splits import stratified_split, subset_and_split
from softlabels.data.synthetic import SyntheticConfig, SyntheticDataConfig, SyntheticSpec, make_synthetic
from softlabels.data.torch_dataset import DatasetLoader, TorchDatasets, torch_dataset_bundle

__all__ = [
    "DATASETS",
    "DATASET_CONFIGS",
    "DataBundle",
    "DataConfig",
    "DatasetLoader",
    "DatasetInfo",
    "DatasetTraits",
    "InMemoryLoader",
    "Loader",
    "SyntheticConfig",
    "SyntheticDataConfig",
    "SyntheticSpec",
    "TorchDatasets",
    "build_data",
    "data_config",
    "data_config_class",
    "in_memory_bundle",
    "list_datasets",
    "make_synthetic",
    "random_crop_flip",
    "read_idx",
    "register_dataset",
    "stratified_split",
    "subset_and_split",
    "torch_dataset_bundle",
    "validate_data_config",
]

_HELPERS = {"base", "idx", "memory", "splits", "torch_dataset"}


def _import_all() -> None:
    """Import every dataset module once so that their ``@register_dataset`` decorators run."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in _HELPERS:
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()


def list_datasets() -> list[str]:
    """Names accepted as ``data.name``, sorted."""
    return DATASETS.names()


def build_data(cfg: DataConfig | dict[str, Any], device: torch.device | str | None = None, seed: int = 0) -> DataBundle:
    """Build the dataset ``cfg.name`` and its train/val/test loaders.

    Args:
        cfg: the ``data`` section: a validated config (``Experiment.data``, already of the dataset's
            class) or a raw mapping, validated here into the dataset's config class.
        device: where batches are delivered (default CPU).
        seed: seeds the subset, the validation split, the order and the augmentation.
    Raises:
        UserError / DataError with a one-line message (unknown name, bad keys or sizes, missing files).
    """
    cfg = data_config(cfg)
    device = torch.device(device) if device is not None else torch.device("cpu")
    built = DATASETS.get(cfg.name)(cfg, device, int(seed))
    if isinstance(built, TorchDatasets):  # a user's map-style datasets: serve them through DataLoaders
        return torch_dataset_bundle(built, cfg, device, int(seed), cfg.name)
    return built
