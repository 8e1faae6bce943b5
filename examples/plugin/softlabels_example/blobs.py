"""``blobs``: 3 classes of 1 x 12 x 12 noisy images: horizontal stripes, vertical stripes, a bright square.

Any map-style ``torch.utils.data.Dataset`` works the same way: return a ``TorchDatasets`` from the builder.
"""
import torch
from torch.utils.data import Dataset

from softlabels.data import TorchDatasets, register_dataset


class Blobs(Dataset):
    """Items (image float32 (1, 12, 12), label int); ``transform`` is applied to the image tensor."""

    classes = ["horizontal", "vertical", "square"]

    def __init__(self, size: int, seed: int, transform=None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.targets = [i % 3 for i in range(size)]
        self.images = torch.rand(size, 1, 12, 12, generator=g) * 0.5
        for i, label in enumerate(self.targets):
            if label == 0:
                self.images[i, 0, ::2, :] += 0.5
            elif label == 1:
                self.images[i, 0, :, ::2] += 0.5
            else:
                r, c = torch.randint(0, 8, (2,), generator=g).tolist()
                self.images[i, 0, r:r + 4, c:c + 4] += 1.0
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.targets[i]


def random_shift(x: torch.Tensor) -> torch.Tensor:
    """Augmentation: roll by -1..1 pixels (uses torch's RNG, which softlabels seeds per item and epoch)."""
    dy, dx = torch.randint(-1, 2, (2,)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(1, 2))


@register_dataset("blobs")
def build_blobs(cfg, device, seed):
    return TorchDatasets(
        train=Blobs(384, seed=1, transform=random_shift if cfg.augment else None),
        train_eval=Blobs(384, seed=1),  # same items without augmentation: used for data.val_split
        test=Blobs(96, seed=2),
        mean=[0.25], std=[1.0],
    )
