"""Shared data types, the dataset registry, config access and seed derivation."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from softlabels.errors import UserError
from softlabels.registry import Registry

#: dataset name -> builder ``f(cfg, device: torch.device, seed: int) -> DataBundle``.
DATASETS: Registry[Callable[..., DataBundle]] = Registry("dataset")


def register_dataset(name: str, *aliases: str):
    """Decorator: register a builder ``f(cfg, device, seed) -> DataBundle`` under ``name``."""
    return DATASETS.register(name, *aliases)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trainer need to know about a dataset.

    ``mean``/``std`` are per channel, in pixel units scaled to [0, 1]. ``train_size`` counts the
    images the train loader actually uses (after ``train_subset`` and minus ``val_split``);
    ``val_size`` the held-out part (0 if none); ``test_size`` the test set. ``full_train_size`` and
    ``full_test_size`` are the sizes of the ORIGINAL sets: loader indices lie in
    ``[0, full_train_size)`` (train and val loaders) and ``[0, full_test_size)`` (test loader),
    so per-sample state can be kept in tensors of those lengths.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    val_size: int
    test_size: int
    full_train_size: int | None = None
    full_test_size: int | None = None
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.full_train_size is None:
            object.__setattr__(self, "full_train_size", self.train_size + self.val_size)
        if self.full_test_size is None:
            object.__setattr__(self, "full_test_size", self.test_size)


class Loader(Protocol):
    """What every loader offers (see :class:`~softlabels.data.memory.InMemoryLoader`)."""

    num_samples: int
    full_size: int
    indices: torch.Tensor
    dataset_labels: torch.Tensor

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class DataBundle:
    """The dataset description plus its loaders; ``val`` is None when ``val_split`` is 0."""

    info: DatasetInfo
    train: Loader
    val: Loader | None
    test: Loader


# ----------------------------------------------------------------------------- config access
def option(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.key`` or ``default`` when the attribute is absent (configs may be partial in tests)."""
    return getattr(cfg, key, default)


def positive_int(cfg: Any, key: str, default: Any = None, minimum: int = 1) -> int:
    """Read ``cfg.key`` as an int >= ``minimum``; anything else raises UserError naming ``data.key``."""
    value = option(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise UserError(f"data.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- seeds
#: stream tags so that each random decision draws from its own seed.
STREAM_SUBSET = 1
STREAM_VAL = 2
STREAM_ORDER = 10
STREAM_CROP = 11
STREAM_FLIP = 12
STREAM_IMAGE_AUG = 13
STREAM_LOADER = 14


def derive_seed(*keys: int) -> int:
    """A 64-bit seed that is a pure function of the integer keys (e.g. seed, epoch, stream)."""
    entropy = [int(k) % (1 << 64) for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of the keys."""
    return torch.Generator().manual_seed(derive_seed(*keys))
