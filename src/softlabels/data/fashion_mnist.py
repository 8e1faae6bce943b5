"""Fashion-MNIST (10 classes, 1x28x28, 60000 train / 10000 test) from its IDX files, held in memory."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from softlabels.data.base import DataBundle, DataConfig, DatasetTraits, register_dataset
from softlabels.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from softlabels.data.memory import in_memory_bundle
from softlabels.errors import DataError

log = logging.getLogger(__name__)

#: where the Debian package ``dataset-fashion-mnist`` puts the (gzipped) IDX files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: used when ``data.root`` is None.
DEFAULT_ROOT = Path("data")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MEAN = (0.2860,)
STD = (0.3530,)
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
HOW_TO_GET = (
    "apt-get install dataset-fashion-mnist, or set data.root to a folder with the IDX files, or data.download: true"
)


def candidate_dirs(root: str | Path | None) -> list[Path]:
    """Folders searched, in order: root and root/FashionMNIST/raw (torchvision's layout); without a
    root, ./data, ./data/FashionMNIST/raw, then SYSTEM_DIR. A root that lacks the files is an error,
    never a silent fallback to another copy."""
    if root is not None:
        return [Path(root), Path(root) / "FashionMNIST" / "raw"]
    return [DEFAULT_ROOT, DEFAULT_ROOT / "FashionMNIST" / "raw", SYSTEM_DIR]


def find_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """(found, missing): the IDX files in ``folder`` (plain preferred over .gz) and the names not there."""
    found, missing = {}, []
    for key, stem in FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(stem)
    return found, missing


def locate(root: str | Path | None) -> dict[str, Path] | None:
    """The four IDX files from the first folder that holds all of them, or None."""
    for folder in candidate_dirs(root):
        found, missing = find_files(folder)
        if not missing:
            return found
    return None


def _download(root: str | Path | None) -> dict[str, Path]:
    import torchvision

    base = Path(root) if root is not None else DEFAULT_ROOT
    log.info("downloading Fashion-MNIST into %s", base)
    try:
        torchvision.datasets.FashionMNIST(str(base), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(base), train=False, download=True)
    except Exception as err:  # network errors come in many types
        raise DataError(f"downloading Fashion-MNIST into {base} failed ({err}); {HOW_TO_GET}") from None
    files = locate(base)
    if files is None:
        raise DataError(
            f"Fashion-MNIST was downloaded into {base} but its IDX files are not in {base / 'FashionMNIST' / 'raw'}"
        )
    return files


def not_found(root: str | Path | None) -> DataError:
    """The one-line error for a root (or the default folders) without the four IDX files."""
    looked = ", ".join(str(d) for d in candidate_dirs(root))
    holds = (f"{FILES['train_images']}[.gz], {FILES['train_labels']}[.gz], {FILES['test_images']}[.gz] and "
             f"{FILES['test_labels']}[.gz]")
    if root is not None:
        return DataError(
            f"data.root {root} does not hold Fashion-MNIST: neither {looked} has {holds}; fix data.root, "
            f"set data.download: true, or remove data.root to use {SYSTEM_DIR}"
        )
    return DataError(f"Fashion-MNIST not found: no folder among {looked} holds {holds}; {HOW_TO_GET}")


class FashionMNISTConfig(DataConfig):
    """``data`` of ``name: fashion_mnist``: 10 classes of 1x28x28 images. ``root`` null looks in ./data,
    ./data/FashionMNIST/raw, then /usr/share/datasets/fashion-mnist (Debian ``dataset-fashion-mnist``)."""

    def traits(self) -> DatasetTraits:
        return DatasetTraits(num_classes=len(CLASS_NAMES), in_channels=1)

    def check_files(self) -> None:
        if not self.download and locate(self.root) is None:
            raise not_found(self.root)


def load_fashion_mnist(
    root: str | Path | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read Fashion-MNIST: (train_images, train_labels, test_images, test_labels).

    Images are uint8 (N, 1, 28, 28), labels int64 (N,); N = 60000 / 10000 for the official files.
    Raises DataError (one line: where it looked, how to get the data) when nothing is found.
    """
    files = locate(root)
    if files is None:
        if not download:
            raise not_found(root)
        files = _download(root)
    out = []
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], IMAGES_MAGIC)
        labels = read_idx(files[f"{split}_labels"], LABELS_MAGIC)
        if images.dim() != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{files[f'{split}_images']}: expected (N, 28, 28) images, got {tuple(images.shape)}")
        if labels.dim() != 1 or labels.numel() != images.shape[0]:
            raise DataError(
                f"{files[f'{split}_labels']}: {labels.numel()} labels for {images.shape[0]} images "
                f"in {files[f'{split}_images']}; re-download the files"
            )
        out += [images.unsqueeze(1), labels.long()]
    return out[0], out[1], out[2], out[3]


@register_dataset("fashion_mnist", config=FashionMNISTConfig)
def build_fashion_mnist(cfg: FashionMNISTConfig, device: torch.device, seed: int) -> DataBundle:
    train_x, train_y, test_x, test_y = load_fashion_mnist(cfg.root, cfg.download)
    return in_memory_bundle(
        cfg,
        name="fashion_mnist",
        train=(train_x, train_y),
        test=(test_x, test_y),
        num_classes=10,
        mean=MEAN,
        std=STD,
        device=device,
        seed=seed,
        class_names=CLASS_NAMES,
    )
