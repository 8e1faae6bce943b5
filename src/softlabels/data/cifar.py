"""CIFAR-10 and CIFAR-100 (3x32x32, 50000 train / 10000 test) from torchvision's python batches, held in memory."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from softlabels.data.base import DataBundle, DataConfig, DatasetTraits, register_dataset
from softlabels.data.memory import in_memory_bundle
from softlabels.errors import DataError

log = logging.getLogger(__name__)

#: used when ``data.root`` is None.
DEFAULT_ROOT = Path("data")


@dataclass(frozen=True)
class CifarVariant:
    """File layout and statistics of one CIFAR release (as torchvision stores it)."""

    name: str
    title: str
    torchvision_class: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10 = CifarVariant(
    "cifar10",
    "CIFAR-10",
    "CIFAR10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
    "labels",
    "label_names",
    10,
    (0.4914, 0.4822, 0.4465),
    (0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarVariant(
    "cifar100",
    "CIFAR-100",
    "CIFAR100",
    "cifar-100-python",
    ("train",),
    ("test",),
    "meta",
    "fine_labels",
    "fine_label_names",
    100,
    (0.5071, 0.4867, 0.4408),
    (0.2675, 0.2565, 0.2761),
)

# Globals a CIFAR batch pickle may reference (numpy arrays); anything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path} is truncated or corrupt ({err}); re-download it (data.download: true)") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR batch (no dict inside); re-download it (data.download: true)")
    return entry


def read_batches(folder: Path, files: tuple[str, ...], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR python batches with a restricted unpickler: uint8 (N, 3, 32, 32) and int64 (N,)."""
    images, labels = [], []
    for name in files:
        path = folder / name
        entry = _unpickle(path)
        data, batch_labels = entry.get("data"), entry.get(label_key)
        if data is None or batch_labels is None:
            raise DataError(f"{path} lacks 'data' or '{label_key}'; re-download it (data.download: true)")
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(batch_labels):
            raise DataError(
                f"{path}: expected (N, 3072) data and N labels, got {data.shape} and {len(batch_labels)}; "
                "re-download it (data.download: true)"
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(np.asarray(batch_labels, dtype=np.int64)))
    return torch.cat(images), torch.cat(labels)


def read_class_names(folder: Path, variant: CifarVariant) -> tuple[str, ...]:
    """Class names from the meta file; () if it is missing or unreadable."""
    path = folder / variant.meta_file
    if not path.is_file():
        return ()
    try:
        names = _unpickle(path).get(variant.names_key, ())
    except DataError:
        return ()
    return tuple(str(n) for n in names)


def _from_torchvision(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(np.asarray(dataset.data, dtype=np.uint8).transpose(0, 3, 1, 2)))
    return images, torch.as_tensor(dataset.targets, dtype=torch.long)


def load_cifar(
    variant: CifarVariant, root: str | Path | None = None, download: bool = False
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], tuple[str, ...]]:
    """Load a CIFAR release: ((train_images, train_labels), (test_images, test_labels), class_names).

    Images uint8 (N, 3, 32, 32), labels int64 (N,). torchvision's class is used when its checksums
    pass (and for ``download``); files that fail them but are well-formed are read directly, with a
    warning. Missing or malformed files raise DataError naming the path.
    """
    import torchvision

    base = Path(root) if root is not None else DEFAULT_ROOT
    folder = base / variant.folder
    tv_class = getattr(torchvision.datasets, variant.torchvision_class)
    if download:
        try:
            train_set = tv_class(str(base), train=True, download=True)
            test_set = tv_class(str(base), train=False, download=False)
        except Exception as err:  # network and integrity errors come in many types
            raise DataError(
                f"downloading {variant.title} into {base} failed ({err}); put the extracted "
                f"'{variant.folder}' folder under data.root instead"
            ) from None
        return _from_torchvision(train_set), _from_torchvision(test_set), tuple(train_set.classes)
    check_cifar_files(variant, root)
    try:
        train_set = tv_class(str(base), train=True, download=False)
        test_set = tv_class(str(base), train=False, download=False)
        return _from_torchvision(train_set), _from_torchvision(test_set), tuple(train_set.classes)
    except RuntimeError as err:
        log.warning("%s: %s (checksums differ from the official release); reading the batches directly", folder, err)
    train = read_batches(folder, variant.train_files, variant.label_key)
    test = read_batches(folder, variant.test_files, variant.label_key)
    return train, test, read_class_names(folder, variant)


def check_cifar_files(variant: CifarVariant, root: str | Path | None) -> None:
    """DataError naming the folder when ``root`` lacks the extracted release (nothing is read)."""
    base = Path(root) if root is not None else DEFAULT_ROOT
    folder = base / variant.folder
    if not folder.is_dir():
        raise DataError(
            f"{variant.title} not found: {folder} does not exist; set data.root to the folder that contains "
            f"'{variant.folder}', or set data.download: true"
        )
    missing = [name for name in variant.train_files + variant.test_files if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{variant.title} in {folder} is incomplete (missing {', '.join(missing)}); re-download it "
            "(data.download: true)"
        )


class Cifar10Config(DataConfig):
    """``data`` of ``name: cifar10``: 10 classes of 3x32x32 images; ``root`` (default ./data) holds
    torchvision's ``cifar-10-batches-py`` folder."""

    variant: ClassVar[CifarVariant] = CIFAR10

    def traits(self) -> DatasetTraits:
        return DatasetTraits(num_classes=self.variant.num_classes, in_channels=3)

    def check_files(self) -> None:
        if not self.download:
            check_cifar_files(self.variant, self.root)


class Cifar100Config(Cifar10Config):
    """``data`` of ``name: cifar100``: 100 classes of 3x32x32 images; ``root`` (default ./data) holds
    torchvision's ``cifar-100-python`` folder."""

    variant: ClassVar[CifarVariant] = CIFAR100


def _build(variant: CifarVariant, cfg: DataConfig, device: torch.device, seed: int) -> DataBundle:
    train, test, names = load_cifar(variant, cfg.root, cfg.download)
    if names and len(names) != variant.num_classes:
        names = ()
    return in_memory_bundle(
        cfg,
        name=variant.name,
        train=train,
        test=test,
        num_classes=variant.num_classes,
        mean=variant.mean,
        std=variant.std,
        device=device,
        seed=seed,
        class_names=names,
    )


@register_dataset("cifar10", config=Cifar10Config)
def build_cifar10(cfg: Cifar10Config, device: torch.device, seed: int) -> DataBundle:
    return _build(CIFAR10, cfg, device, seed)


@register_dataset("cifar100", config=Cifar100Config)
def build_cifar100(cfg: Cifar100Config, device: torch.device, seed: int) -> DataBundle:
    return _build(CIFAR100, cfg, device, seed)
