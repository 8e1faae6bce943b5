"""ImageNet (or any ImageFolder with train/ and val/) through a worker-based DataLoader.

Augmentation is seeded per item from (seed, epoch, original index), so a batch is the same
whatever ``num_workers`` is and whether the run was resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch.utils.data import Dataset

from softlabels.data.base import (
    STREAM_IMAGE_AUG,
    DataBundle,
    DataConfig,
    DatasetInfo,
    DatasetTraits,
    derive_seed,
    register_dataset,
)
from softlabels.data.epoch_loader import EpochLoader, EpochSampler  # noqa: F401 (EpochSampler: public here before)
from softlabels.data.splits import split_seed, subset_and_split
from softlabels.errors import DataError, UserError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: default training crop / evaluation centre crop, and evaluation resize, in pixels (``data.crop_size`` /
#: ``data.resize_size`` change them).
CROP_SIZE = 224
RESIZE_SIZE = 256
#: used when ``data.root`` is None.
DEFAULT_ROOT = Path("data") / "imagenet"


def train_transform(crop: int, flip: bool = True) -> Callable:
    """RandomResizedCrop(crop, scale (0.08, 1)) [+ RandomHorizontalFlip] + ToTensor + Normalize."""
    from torchvision import transforms as T

    steps = [T.RandomResizedCrop(crop, scale=(0.08, 1.0))]
    if flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(steps)


def eval_transform(crop: int, resize: int) -> Callable:
    """Resize(resize) + CenterCrop(crop) + ToTensor + Normalize."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(MEAN, STD)])


class IndexedImages(Dataset):
    """Items ``(image float32 (3, crop, crop), target int, original index int)`` of an ImageFolder.

    Keys are ``(position, epoch)`` pairs from :class:`EpochSampler`; when ``randomized``, the
    transform runs under a torch RNG seeded from (seed, epoch, original index) and restored after.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        indices: torch.Tensor,
        transform: Callable,
        loader: Callable,
        seed: int,
        randomized: bool,
    ) -> None:
        self.samples = list(samples)
        self.indices = [int(i) for i in indices]
        self.transform = transform
        self.loader = loader
        self.seed = seed
        self.randomized = randomized

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int, int]:
        position, epoch = (key, 0) if isinstance(key, int) else key
        original = self.indices[position]
        path, target = self.samples[original]
        try:
            image = self.loader(path)
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err}") from None
        if self.randomized:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, epoch, original, STREAM_IMAGE_AUG))
                x = self.transform(image)
        else:
            x = self.transform(image)
        return x, target, original


class FolderLoader(EpochLoader):
    """A ``DataLoader`` over image files with the same interface as ``InMemoryLoader``.

    Yields ``(images float32 (B, 3, crop, crop), targets int64 (B,), indices int64 (B,))`` on
    ``device``; ``indices`` are positions in the full ImageFolder (sorted file order). See
    :class:`EpochLoader`.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], indices: torch.Tensor, transform: Callable,
                 image_loader: Callable, *, augment: bool = False, seed: int = 0, **loader_options: Any) -> None:
        indices = indices.long().cpu()
        labels = torch.as_tensor([samples[int(i)][1] for i in indices], dtype=torch.long)
        items = IndexedImages(samples, indices, transform, image_loader, seed, randomized=augment)
        super().__init__(items, labels, indices, len(samples), augment=augment, seed=seed, **loader_options)


def _image_folder(path: Path) -> Any:
    from torchvision.datasets import ImageFolder

    if not path.is_dir():
        raise _missing_folder(path)
    try:
        return ImageFolder(str(path))
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"ImageNet folder {path}: {err}") from None


def _missing_folder(path: Path) -> DataError:
    return DataError(
        f"ImageNet folder {path} does not exist; set data.root to a folder with train/ and val/ "
        "(one sub-folder of images per class)"
    )


class ImageNetConfig(DataConfig):
    """``data`` of ``name: imagenet``: an ImageFolder tree ``root/train/<class>/*`` and ``root/val/<class>/*``
    (default root ./data/imagenet); 3-channel images, one class per sub-folder of ``train``."""

    crop_size: int = Field(CROP_SIZE, ge=1, description="training crop and evaluation centre crop, in pixels")
    resize_size: int = Field(RESIZE_SIZE, ge=1, description="evaluation resize of the shorter side, in pixels")

    omit_when_default: ClassVar[frozenset[str]] = DataConfig.omit_when_default | {"crop_size", "resize_size"}

    @model_validator(mode="after")
    def _crop_fits(self) -> ImageNetConfig:
        if self.crop_size > self.resize_size:
            raise ValueError(f"data.crop_size ({self.crop_size}) must not exceed data.resize_size ({self.resize_size})")
        return self

    def folder(self) -> Path:
        return Path(self.root or DEFAULT_ROOT)

    def traits(self) -> DatasetTraits:
        train = self.folder() / "train"
        classes = sum(1 for entry in train.iterdir() if entry.is_dir()) if train.is_dir() else None
        return DatasetTraits(num_classes=classes, in_channels=3)

    def check_files(self) -> None:
        for split in ("train", "val"):
            if not (self.folder() / split).is_dir():
                raise _missing_folder(self.folder() / split)


@register_dataset("imagenet", config=ImageNetConfig)
def build_imagenet(cfg: ImageNetConfig, device: torch.device, seed: int) -> DataBundle:
    """ImageFolder loaders for ``root/train`` (train, and val when ``val_split``) and ``root/val`` (test)."""
    root = cfg.folder()
    train_folder = _image_folder(root / "train")
    test_folder = _image_folder(root / "val")
    if test_folder.classes != train_folder.classes:
        raise DataError(
            f"{root / 'val'} and {root / 'train'} have different class folders "
            f"({len(test_folder.classes)} vs {len(train_folder.classes)})"
        )
    batch_size, eval_batch_size, num_workers = cfg.batch_size, cfg.eval_batch_size, cfg.num_workers
    augment, flip, drop_last = cfg.augment, cfg.flip, cfg.drop_last
    labels = torch.as_tensor(train_folder.targets, dtype=torch.long)
    train_idx, val_idx = subset_and_split(labels, cfg.train_subset, cfg.val_split, split_seed(cfg, seed))
    if drop_last and train_idx.numel() < batch_size:
        raise UserError(
            f"data.drop_last is true but the training set has only {train_idx.numel()} images, "
            f"fewer than data.batch_size = {batch_size}"
        )
    crop, resize = cfg.crop_size, cfg.resize_size
    evaluate = eval_transform(crop, resize)
    common = {"device": device, "num_workers": num_workers, "seed": seed}
    train_loader = FolderLoader(
        train_folder.samples,
        train_idx,
        train_transform(crop, flip) if augment else evaluate,
        train_folder.loader,
        batch_size=batch_size,
        shuffle=True,
        augment=augment,
        drop_last=drop_last,
        **common,
    )
    val_loader = None
    if val_idx.numel():
        val_loader = FolderLoader(
            train_folder.samples, val_idx, evaluate, train_folder.loader, batch_size=eval_batch_size, **common
        )
    test_loader = FolderLoader(
        test_folder.samples,
        torch.arange(len(test_folder.samples)),
        evaluate,
        test_folder.loader,
        batch_size=eval_batch_size,
        **common,
    )
    info = DatasetInfo(
        name="imagenet",
        num_classes=len(train_folder.classes),
        in_channels=3,
        image_size=crop,
        mean=MEAN,
        std=STD,
        train_size=int(train_idx.numel()),
        val_size=int(val_idx.numel()),
        test_size=len(test_folder.samples),
        full_train_size=len(train_folder.samples),
        full_test_size=len(test_folder.samples),
        class_names=tuple(train_folder.classes),
    )
    return DataBundle(info=info, train=train_loader, val=val_loader, test=test_loader)
