"""Shared data types, the common data config, the dataset registry and seed derivation."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from pydantic import Field, StrictFloat, StrictInt, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from softlabels.errors import ConfigError, UserError
from softlabels.registry import Registry
from softlabels.schema import StrictModel, validation_message


@dataclass(frozen=True)
class DatasetTraits:
    """What a dataset's config says about its data without reading it (None: known only once loaded)."""

    num_classes: int | None = None
    in_channels: int | None = None


class DataConfig(StrictModel):
    """The ``data`` keys every dataset shares. A dataset with keys of its own subclasses it in its file
    and registers the subclass (``register_dataset(name, config=...)``); ``data.name`` picks the class."""

    name: str = Field("fashion_mnist", description="a registered dataset (`softlabels list datasets`)")
    root: str | None = Field(None, description="dataset folder; null: the dataset's default (see below)")
    download: bool = Field(False, description="let torchvision download the dataset (needs network)")
    train_subset: StrictInt | StrictFloat | None = Field(
        None, description="stratified, seeded subset of the training set: a fraction in (0, 1] or a count of images"
    )
    val_split: StrictInt | StrictFloat = Field(
        0,
        description="stratified, seeded validation split carved from the (subset) training set, a fraction or a "
        "count; when set, the best epoch is chosen on it, never on test",
    )
    split_seed: int | None = Field(
        None,
        description="seed of train_subset and val_split; null: the run's seed (fix it to compare seeds on the same "
        "images)",
    )
    batch_size: int = Field(128, ge=1, description="training batch (all processes together under torchrun)")
    eval_batch_size: int = Field(512, ge=1, description="batch of the validation and test passes")
    num_workers: int = Field(4, ge=0, description="DataLoader workers (file-based datasets; in-memory sets ignore it)")
    augment: bool = Field(True, description="random crop with zero padding and horizontal flip on training batches")
    crop_padding: int = Field(4, ge=0, description="zero padding of the random crop, in pixels")
    flip: bool = Field(True, description="random horizontal flip")
    drop_last: bool = Field(False, description="drop the last incomplete training batch")
    aug_seed: int | None = Field(None, description="seed of the augmentation stream (crops and flips per sample and epoch; the order stays tied to `seed`), so seeds of a sweep can share one teacher cache; null: the run's seed")
    synthetic: dict[str, Any] | None = Field(
        None,
        description="settings of data.name synthetic (below); other datasets ignore it (run folders written "
        "before per-dataset configs carry it)",
    )

    omit_when_default: ClassVar[frozenset[str]] = frozenset({"aug_seed", "synthetic"})

    @field_validator("train_subset")
    @classmethod
    def _subset_positive(cls, v):
        if v is not None and (v <= 0 or (isinstance(v, float) and v > 1)):
            raise ValueError("must be a fraction in (0, 1] or a positive count of images")
        return v

    @field_validator("val_split")
    @classmethod
    def _val_split_range(cls, v):
        if v < 0 or (isinstance(v, float) and v >= 1):
            raise ValueError("must be 0, a fraction in (0, 1) or a positive count of images")
        return v

    def traits(self) -> DatasetTraits:
        """Class count and input channels known from the config alone (override per dataset)."""
        return DatasetTraits()

    def check_files(self) -> None:
        """Raise DataError naming the path when the data is visibly not where the config says (no reading)."""


#: dataset name -> builder ``f(cfg, device: torch.device, seed: int) -> DataBundle``.
DATASETS: Registry[Callable[..., DataBundle]] = Registry("dataset")
#: dataset name -> its config class (:class:`DataConfig` or a subclass).
DATASET_CONFIGS: dict[str, type[DataConfig]] = {}


def register_dataset(name: str, *aliases: str, config: type[DataConfig] = DataConfig):
    """Decorator: register a builder ``f(cfg: config, device, seed) -> DataBundle`` under ``name``.

    ``config``: the pydantic model of its ``data`` section (default: the shared keys only).
    """
    add = DATASETS.register(name, *aliases)

    def register(builder):
        for key in (name, *aliases):
            DATASET_CONFIGS[key] = config
        return add(builder)

    return register


def data_config_class(name: str) -> type[DataConfig]:
    """The config class of dataset ``name`` (UserError listing the known names when unknown)."""
    DATASETS.get(name)  # raises the one-line error for unknown names
    return DATASET_CONFIGS.get(name, DataConfig)


def _unknown_dataset(name: Any) -> ValidationError:
    message = f"unknown dataset {name!r}; known: {', '.join(DATASETS.names())} (`softlabels list datasets`)"
    detail = InitErrorDetails(type=PydanticCustomError("unknown_dataset", message), loc=("name",), input=name)
    return ValidationError.from_exception_data("DataConfig", [detail])


def validate_data_config(value: Any) -> DataConfig:
    """Validate a ``data`` mapping (or a config object) into its dataset's config class, once.

    Raises pydantic's ValidationError (locations relative to ``data``) when a key or value is wrong.
    """
    if isinstance(value, DataConfig):
        cls = DATASET_CONFIGS.get(value.name)
        if cls is None:
            raise _unknown_dataset(value.name)
        return value if type(value) is cls else cls.model_validate(value.model_dump(exclude_unset=True))
    if not isinstance(value, dict):
        return DataConfig.model_validate(value)  # pydantic's own "must be a mapping" error
    name = value.get("name", DataConfig.model_fields["name"].default)
    if not isinstance(name, str) or name not in DATASETS:
        raise _unknown_dataset(name)
    return DATASET_CONFIGS.get(name, DataConfig).model_validate(value)


def data_config(value: Any) -> DataConfig:
    """:func:`validate_data_config` with a one-line ConfigError naming the ``data.*`` key."""
    try:
        return validate_data_config(value)
    except ValidationError as err:
        raise ConfigError(validation_message(err, "data.")) from None


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
