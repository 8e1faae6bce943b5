"""A seeded, learnable synthetic image-classification set for tests and quick experiments.

Each class has a smooth prototype: a per-channel colour plus a sum of low-frequency sinusoids,
mirror-symmetric so that horizontal flips keep the class. Classes come in pairs that share 30 % of
their pattern, so some classes are more alike than others (the teacher's soft labels carry
information). A sample is its class prototype, shifted by a few pixels, with a random contrast,
plus Gaussian pixel noise, stored as uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field

from softlabels.data.base import DataBundle, DataConfig, DatasetTraits, generator, register_dataset
from softlabels.data.memory import channel_stats, in_memory_bundle
from softlabels.errors import UserError
from softlabels.schema import StrictModel

_STREAM_PROTOTYPES = 100
_STREAM_TRAIN = 101
_STREAM_TEST = 102
_WAVES = 3
_CHUNK = 4096


@dataclass(frozen=True)
class SyntheticSpec:
    """Size of the synthetic set. ``noise``: std of the pixel noise in [0, 1] pixel units;
    ``max_shift``: largest random translation of the prototype, in pixels."""

    num_classes: int = 10
    image_size: int = 16
    channels: int = 3
    train_size: int = 2000
    test_size: int = 500
    noise: float = 0.15
    max_shift: int = 2

    def validate(self) -> None:
        for key in ("num_classes", "image_size", "channels", "train_size", "test_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"data.synthetic.{key} must be an integer >= 1, got {value!r}")
        if self.num_classes < 2:
            raise UserError(f"data.synthetic.num_classes must be >= 2, got {self.num_classes}")
        if not self.noise >= 0 or self.max_shift < 0:
            raise UserError("data.synthetic.noise and data.synthetic.max_shift must be >= 0")


class SyntheticConfig(StrictModel):
    """``data.synthetic``: shape and seed of the synthetic set (see :class:`SyntheticSpec`)."""

    num_classes: int = Field(10, ge=2, description="classes (balanced)")
    image_size: int = Field(32, ge=4, description="height = width, in pixels")
    channels: int = Field(3, ge=1, description="image channels")
    train_size: int = Field(512, ge=2, description="training images")
    test_size: int = Field(256, ge=2, description="test images")
    noise: float = Field(0.15, ge=0, description="std of the Gaussian pixel noise, in [0, 1] pixel units")
    max_shift: int = Field(2, ge=0, description="largest random translation of a class prototype, in pixels")
    seed: int = Field(0, description="seed of the images themselves (not the run's seed: every run sees the same set)")

    omit_when_default: ClassVar[frozenset[str]] = frozenset({"noise", "max_shift", "seed"})

    def spec(self) -> SyntheticSpec:
        return SyntheticSpec(**self.model_dump(exclude={"seed"}))


class SyntheticDataConfig(DataConfig):
    """``data`` of ``name: synthetic``: the shared keys plus ``synthetic``."""

    synthetic: SyntheticConfig = Field(
        default_factory=SyntheticConfig, description="shape of the seeded synthetic dataset"
    )

    omit_when_default: ClassVar[frozenset[str]] = frozenset({"aug_seed"})

    def traits(self) -> DatasetTraits:
        return DatasetTraits(num_classes=self.synthetic.num_classes, in_channels=self.synthetic.channels)


def _waves(gen: torch.Generator, count: int, channels: int, size: int) -> torch.Tensor:
    """``count`` smooth patterns (count, channels, size, size), zero mean, max |value| 1, float32."""
    coords = torch.arange(size, dtype=torch.float32) / size
    yy, xx = coords.view(-1, 1), coords.view(1, -1)
    shape = (count, channels, _WAVES, 1, 1)
    fy = torch.empty(shape).uniform_(-2.0, 2.0, generator=gen)
    fx = torch.empty(shape).uniform_(-2.0, 2.0, generator=gen)
    phase = torch.empty(shape).uniform_(0.0, 2 * math.pi, generator=gen)
    amp = torch.empty(shape).uniform_(0.5, 1.0, generator=gen)
    pattern = (amp * torch.sin(2 * math.pi * (fy * yy + fx * xx) + phase)).sum(dim=2)
    pattern = pattern - pattern.mean(dim=(2, 3), keepdim=True)
    return pattern / pattern.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)


def _prototypes(spec: SyntheticSpec, seed: int) -> torch.Tensor:
    """Class prototypes (K, C, S + 2m, S + 2m) in [0, 1], m = max_shift (room for the shifts)."""
    gen = generator(seed, _STREAM_PROTOTYPES)
    size = spec.image_size + 2 * spec.max_shift
    own = _waves(gen, spec.num_classes, spec.channels, size)
    shared = _waves(gen, (spec.num_classes + 1) // 2, spec.channels, size)
    colour = torch.empty(spec.num_classes, spec.channels, 1, 1).uniform_(-0.15, 0.15, generator=gen)
    pattern = 0.7 * own + 0.3 * shared[torch.arange(spec.num_classes) // 2]
    pattern = 0.5 * (pattern + pattern.flip(-1))
    return (0.5 + colour + 0.3 * pattern).clamp(0, 1)


def _samples(
    spec: SyntheticSpec, prototypes: torch.Tensor, count: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(count) % spec.num_classes
    labels = labels[torch.randperm(count, generator=gen)]
    size, m = spec.image_size, spec.max_shift
    padded = size + 2 * m
    images = torch.empty(count, spec.channels, size, size, dtype=torch.uint8)
    grid = torch.arange(size)
    for start in range(0, count, _CHUNK):
        y = labels[start : start + _CHUNK]
        n = y.numel()
        off = torch.randint(0, 2 * m + 1, (n, 2), generator=gen)
        flat = ((off[:, :1] + grid).unsqueeze(2) * padded + (off[:, 1:] + grid).unsqueeze(1)).view(n, 1, -1)
        base = torch.gather(prototypes[y].view(n, spec.channels, -1), 2, flat.expand(n, spec.channels, -1))
        contrast = torch.empty(n, 1, 1).uniform_(0.8, 1.2, generator=gen)
        x = 0.5 + (base - 0.5) * contrast
        x = x + spec.noise * torch.randn(x.shape, generator=gen)
        images[start : start + n] = (x.clamp_(0, 1) * 255).round_().to(torch.uint8).view(n, spec.channels, size, size)
    return images, labels


def make_synthetic(
    spec: SyntheticSpec | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_images, train_labels, test_images, test_labels), a pure function of (spec, seed).

    Images uint8 (N, channels, image_size, image_size); labels int64 (N,), balanced (class counts
    differ by at most 1). Train and test share the prototypes and draw their samples from separate
    seeded streams, so the test set does not depend on ``train_size``.
    """
    spec = spec or SyntheticSpec()
    spec.validate()
    prototypes = _prototypes(spec, seed)
    train = _samples(spec, prototypes, spec.train_size, generator(seed, _STREAM_TRAIN))
    test = _samples(spec, prototypes, spec.test_size, generator(seed, _STREAM_TEST))
    return train[0], train[1], test[0], test[1]


@register_dataset("synthetic", config=SyntheticDataConfig)
def build_synthetic(cfg: SyntheticDataConfig, device: torch.device, seed: int) -> DataBundle:
    """The synthetic set of ``cfg.synthetic``; its content uses ``cfg.synthetic.seed`` (default 0),
    not the run seed, so runs with different seeds see the same data (like a real dataset)."""
    spec = cfg.synthetic.spec()
    train_x, train_y, test_x, test_y = make_synthetic(spec, cfg.synthetic.seed)
    mean, std = channel_stats(train_x)
    return in_memory_bundle(
        cfg,
        name="synthetic",
        train=(train_x, train_y),
        test=(test_x, test_y),
        num_classes=spec.num_classes,
        mean=mean,
        std=std,
        device=device,
        seed=seed,
        class_names=tuple(f"class_{i}" for i in range(spec.num_classes)),
    )
