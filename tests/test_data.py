"""softlabels.data: IDX reader, datasets, stratified splits, the in-memory loader and augmentation."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.data import (
    DataBundle,
    DataConfig,
    DatasetInfo,
    InMemoryLoader,
    SyntheticSpec,
    build_data,
    data_config,
    list_datasets,
    make_synthetic,
    random_crop_flip,
    read_idx,
    stratified_split,
)
from softlabels.data import cifar as cifar_module
from softlabels.data import fashion_mnist as fmnist_module
from softlabels.data.idx import write_idx
from softlabels.errors import DataError, UserError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")


def data_cfg(name: str = "synthetic", **overrides) -> DataConfig:
    """The typed ``data`` config of dataset ``name`` (its own config class), as the trainer gets it."""
    raw = {"name": name, "batch_size": 32, "eval_batch_size": 64, "num_workers": 0, **overrides}
    if name == "imagenet":  # the fake ImageNet's images are 12x14 pixels
        raw = {"crop_size": 8, "resize_size": 10, **raw}
    if name == "synthetic":
        raw.setdefault("synthetic", {"num_classes": 4, "image_size": 8, "channels": 3, "train_size": 200,
                                     "test_size": 40})
    return data_config(raw)


def collect(loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ys, idx = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


# ----------------------------------------------------------------------------- IDX reader
def idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_read_idx_known_bytes(tmp_path, compressed):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([3, 1], dtype=np.uint8)
    for name, array, magic in (("img", images, 2051), ("lbl", labels, 2049)):
        raw = idx_bytes(array)
        assert int.from_bytes(raw[:4], "big") == magic
        path = tmp_path / (name + (".gz" if compressed else ""))
        path.write_bytes(gzip.compress(raw) if compressed else raw)
        out = read_idx(path, magic)
        assert out.dtype == torch.uint8 and out.shape == array.shape
        assert torch.equal(out, torch.from_numpy(array))


def test_read_idx_other_dtype_and_writer_roundtrip(tmp_path):
    values = np.array([[1, -2], [300, 4]], dtype=">i4")
    path = tmp_path / "int32.idx"
    path.write_bytes(idx_bytes(values, 0x0C))
    assert torch.equal(read_idx(path), torch.tensor([[1, -2], [300, 4]], dtype=torch.int32))
    tensor = torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8)
    assert torch.equal(read_idx(write_idx(tmp_path / "x.gz", tensor), 2051), tensor)


@pytest.mark.parametrize("compressed", [False, True])
def test_read_idx_truncated_names_file(tmp_path, compressed):
    raw = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))[:-7]
    path = tmp_path / ("short.idx" + (".gz" if compressed else ""))
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    with pytest.raises(DataError, match="short.idx") as err:
        read_idx(path, 2051)
    assert "truncated" in str(err.value) and "re-download" in str(err.value)


def test_read_idx_cut_gzip_and_bad_magic(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 5, 5), dtype=np.uint8)))[:30])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(path)
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        read_idx(path, 2051)
    path.write_bytes(b"hello world!")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


# ----------------------------------------------------------------------------- Fashion-MNIST
def write_fake_fmnist(folder: Path, n_train: int = 60, n_test: int = 20, compress: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    ext = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte{ext}",
            torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8),
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", (torch.arange(n) % 10).to(torch.uint8))


def test_fmnist_missing_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist_module, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setattr(fmnist_module, "DEFAULT_ROOT", tmp_path / "no-default")
    with pytest.raises(DataError) as err:
        build_data(data_cfg("fashion_mnist"))
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "no-default") in message and str(tmp_path / "no-system-copy") in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.download: true" in message


def test_fmnist_root_without_data_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    """data.root that lacks the files names that path, even when the system copy exists."""
    write_fake_fmnist(tmp_path / "system")
    monkeypatch.setattr(fmnist_module, "SYSTEM_DIR", tmp_path / "system")
    assert build_data(data_cfg("fashion_mnist")).info.train_size == 60  # no root: the system copy
    cfg = data_cfg("fashion_mnist", root=str(tmp_path / "empty"))
    for check in (cfg.check_files, lambda: build_data(cfg)):
        with pytest.raises(DataError) as err:
            check()
        message = str(err.value)
        assert "\n" not in message and f"data.root {tmp_path / 'empty'} does not hold Fashion-MNIST" in message


def test_fmnist_torchvision_layout_and_truncated_file(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist_module, "SYSTEM_DIR", tmp_path / "no-system-copy")
    raw = tmp_path / "FashionMNIST" / "raw"
    write_fake_fmnist(raw, compress=True)
    bundle = build_data(data_cfg("fashion_mnist", root=str(tmp_path)))
    assert (bundle.info.train_size, bundle.info.test_size, bundle.info.in_channels) == (60, 20, 1)
    assert bundle.info.mean == (0.2860,) and bundle.info.std == (0.3530,)
    path = raw / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        build_data(data_cfg("fashion_mnist", root=str(tmp_path)))


@pytest.fixture(scope="module")
def fmnist():
    if not FMNIST_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    return fmnist_module.load_fashion_mnist(FMNIST_DIR)


@needs_fmnist
def test_real_fashion_mnist(fmnist):
    train_x, train_y, test_x, test_y = fmnist
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    assert torch.equal(torch.bincount(train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test_y), torch.full((10,), 1000))
    mean = train_x.sum(dtype=torch.int64).item() / train_x.numel() / 255
    assert abs(mean - fmnist_module.MEAN[0]) < 1e-3


@needs_fmnist
def test_real_fashion_mnist_bundle_subset_and_val(fmnist, monkeypatch):
    monkeypatch.setattr(fmnist_module, "load_fashion_mnist", lambda root, download: fmnist)
    cfg = data_cfg("fashion_mnist", train_subset=0.1, val_split=0.1, batch_size=128)
    bundle = build_data(cfg, seed=3)
    info = bundle.info
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 28)
    assert (info.train_size, info.val_size, info.test_size) == (5400, 600, 10000)
    assert (info.full_train_size, info.full_test_size) == (60000, 10000)
    assert torch.equal(torch.bincount(bundle.train.dataset_labels), torch.full((10,), 540))
    assert torch.equal(torch.bincount(bundle.val.dataset_labels), torch.full((10,), 60))
    assert not set(bundle.train.indices.tolist()) & set(bundle.val.indices.tolist())
    assert torch.equal(bundle.train.dataset_labels, fmnist[1][bundle.train.indices])
    again = build_data(cfg, seed=3)
    assert torch.equal(again.train.indices, bundle.train.indices) and torch.equal(again.val.indices, bundle.val.indices)
    other = build_data(cfg, seed=4)
    assert not torch.equal(other.train.indices, bundle.train.indices)
    x, y, i = next(iter(bundle.val))
    assert x.shape == (64, 1, 28, 28) and torch.equal(y, fmnist[1][i])


# ----------------------------------------------------------------------------- splits
def test_stratified_split_proportions_and_determinism():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([500, 300, 200])])[torch.randperm(1000)]
    chosen, rest = stratified_split(labels, 100, torch.Generator().manual_seed(1))
    assert chosen.numel() == 100 and rest.numel() == 900
    assert torch.equal(torch.sort(torch.cat([chosen, rest])).values, torch.arange(1000))
    assert torch.equal(torch.bincount(labels[chosen], minlength=3), torch.tensor([50, 30, 20]))
    again, _ = stratified_split(labels, 100, torch.Generator().manual_seed(1))
    other, _ = stratified_split(labels, 100, torch.Generator().manual_seed(2))
    assert torch.equal(chosen, again) and not torch.equal(chosen, other)
    odd, _ = stratified_split(labels, 7, torch.Generator().manual_seed(1))
    assert odd.numel() == 7 and torch.bincount(labels[odd], minlength=3).tolist() in ([4, 2, 1], [3, 2, 2])


def test_train_subset_count_fraction_and_errors():
    bundle = build_data(data_cfg(train_subset=40))
    assert bundle.info.train_size == 40
    assert torch.equal(torch.bincount(bundle.train.dataset_labels), torch.full((4,), 10))
    assert build_data(data_cfg(train_subset=0.25)).info.train_size == 50
    assert build_data(data_cfg(train_subset=1.0)).info.train_size == 200
    for bad in (201, 0, -3, 1.5, True, "half"):
        with pytest.raises(UserError, match="data.train_subset"):
            build_data(data_cfg(train_subset=bad))


def test_val_split_disjoint_stratified_original_indices():
    cfg = data_cfg(train_subset=100, val_split=0.2)
    bundle = build_data(cfg, seed=5)
    train, val = bundle.train.indices, bundle.val.indices
    assert (train.numel(), val.numel()) == (80, 20) == (bundle.info.train_size, bundle.info.val_size)
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.equal(torch.bincount(bundle.val.dataset_labels), torch.full((4,), 5))
    assert int(torch.cat([train, val]).max()) < 200 and bundle.info.full_train_size == 200
    assert not bundle.val.shuffle and not bundle.val.augment
    _, _, val_idx = collect(bundle.val)
    assert torch.equal(val_idx, val)  # val loader: original indices, in order
    assert build_data(data_cfg(val_split=30)).info.val_size == 30
    assert build_data(data_cfg(val_split=0)).val is None
    for bad in (1.0, 200, -1):
        with pytest.raises(UserError, match="data.val_split"):
            build_data(data_cfg(val_split=bad))


def test_split_seed_fixes_subset_and_val_across_run_seeds():
    fixed = [build_data(data_cfg(train_subset=100, val_split=0.2, split_seed=3), seed=s) for s in (0, 1)]
    assert torch.equal(fixed[0].train.indices, fixed[1].train.indices)
    assert torch.equal(fixed[0].val.indices, fixed[1].val.indices)
    assert fixed[0].train.seed == 0 and fixed[1].train.seed == 1  # order and augmentation still follow the run
    free = [build_data(data_cfg(train_subset=100, val_split=0.2), seed=s) for s in (0, 1)]
    assert not torch.equal(free[0].val.indices, free[1].val.indices)
    same = build_data(data_cfg(train_subset=100, val_split=0.2), seed=3)
    assert torch.equal(same.val.indices, fixed[0].val.indices)  # split_seed 3 == run seed 3


# ----------------------------------------------------------------------------- loader
def test_loader_batches_shapes_normalisation_and_coverage():
    cfg = data_cfg(augment=False, batch_size=64)
    bundle = build_data(cfg)
    assert isinstance(bundle, DataBundle) and isinstance(bundle.info, DatasetInfo)
    train_x, train_y, _, _ = make_synthetic(
        SyntheticSpec(num_classes=4, image_size=8, channels=3, train_size=200, test_size=40)
    )
    assert len(bundle.train) == 4 and bundle.train.num_samples == 200
    x, y, i = collect(bundle.train)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and i.dtype == torch.int64
    assert x.shape == (200, 3, 8, 8) and x.device.type == "cpu"
    assert torch.equal(torch.sort(i).values, torch.arange(200))  # every index exactly once
    assert torch.equal(y, train_y[i])
    mean = torch.tensor(bundle.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.info.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x * std + mean, train_x[i].float() / 255, atol=1e-5, rtol=0)
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    tx, _, ti = collect(bundle.test)
    assert len(bundle.test) == 1 and tx.shape == (40, 3, 8, 8) and torch.equal(ti, torch.arange(40))


def test_loader_epoch_determinism_and_drop_last():
    cfg = data_cfg(batch_size=48, drop_last=True)
    first, resumed = build_data(cfg, seed=1), build_data(cfg, seed=1)
    assert len(first.train) == 4
    first.train.set_epoch(2)
    resumed.train.set_epoch(2)
    a, b = list(first.train), list(resumed.train)
    assert len(a) == 4 and all(x.shape[0] == 48 for x, _, _ in a)
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    again = list(first.train)  # iterating twice within one epoch repeats it
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, again))
    first.train.set_epoch(3)
    assert not torch.equal(collect(first.train)[2], torch.cat([ia for _, _, ia in a]))
    other_seed = build_data(cfg, seed=2).train
    other_seed.set_epoch(2)
    assert not torch.equal(collect(other_seed)[2], torch.cat([ia for _, _, ia in a]))


def test_loader_without_crop_and_flip_equals_normalised_input():
    images = torch.randint(0, 256, (10, 2, 5, 6), dtype=torch.uint8)
    labels = torch.arange(10) % 3
    loader = InMemoryLoader(
        images,
        labels,
        None,
        batch_size=4,
        mean=(0.5, 0.25),
        std=(0.2, 0.1),
        shuffle=True,
        augment=True,
        crop_padding=0,
        flip=False,
    )
    x, y, i = collect(loader)
    expected = (images[i].float() / 255 - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.2, 0.1]).view(
        1, 2, 1, 1
    )
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    assert torch.equal(y, labels[i])


def test_augmentation_crop_and_flip():
    image = torch.arange(12, dtype=torch.uint8).view(1, 1, 3, 4)  # asymmetric
    flipped = random_crop_flip(image, None, torch.tensor([True]), 0)
    assert torch.equal(flipped, torch.tensor([[[[3, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8]]]], dtype=torch.uint8))
    assert torch.equal(random_crop_flip(image, None, torch.tensor([False]), 0), image)
    centre = random_crop_flip(image, torch.tensor([[1, 1]]), None, 1)
    assert torch.equal(centre, image)
    shifted = random_crop_flip(image, torch.tensor([[0, 0]]), None, 1)  # content moves down-right
    assert torch.equal(shifted, torch.tensor([[[[0, 0, 0, 0], [0, 0, 1, 2], [0, 4, 5, 6]]]], dtype=torch.uint8))
    both = random_crop_flip(image.repeat(2, 3, 1, 1), torch.tensor([[2, 2], [1, 1]]), torch.tensor([True, True]), 1)
    assert torch.equal(both[1], flipped[0].repeat(3, 1, 1))
    # crop first (content moves up-left), then flip the crop
    assert torch.equal(both[0, 0], torch.tensor([[0, 7, 6, 5], [0, 11, 10, 9], [0, 0, 0, 0]], dtype=torch.uint8))


def test_augmented_loader_keeps_shape_and_varies_by_epoch():
    bundle = build_data(data_cfg(batch_size=200, crop_padding=2, flip=True))
    loader = bundle.train
    x0, _, i0 = next(iter(loader))
    assert x0.shape == (200, 3, 8, 8)
    order = torch.argsort(i0)
    loader.set_epoch(1)
    x1, _, i1 = next(iter(loader))
    assert not torch.equal(x0[order], x1[torch.argsort(i1)])
    # padding pixels hold the normalised value of black
    black = -torch.tensor(bundle.info.mean) / torch.tensor(bundle.info.std)
    assert torch.isclose(x0, black.view(1, 3, 1, 1)).any()


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_deterministic_balanced_learnable():
    spec = SyntheticSpec(num_classes=5, image_size=12, channels=1, train_size=500, test_size=100)
    a, b = make_synthetic(spec, seed=7), make_synthetic(spec, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], make_synthetic(spec, seed=8)[0])
    train_x, train_y, test_x, test_y = a
    assert train_x.shape == (500, 1, 12, 12) and train_x.dtype == torch.uint8 and test_x.shape == (100, 1, 12, 12)
    assert torch.equal(torch.bincount(train_y), torch.full((5,), 100))
    # nearest class mean on the raw pixels is already far above chance (0.2)
    means = torch.stack([train_x[train_y == c].float().mean(0) for c in range(5)]).flatten(1)
    pred = torch.cdist(test_x.float().flatten(1), means).argmin(1)
    assert (pred == test_y).float().mean() > 0.6
    bigger = make_synthetic(
        SyntheticSpec(num_classes=5, image_size=12, channels=1, train_size=900, test_size=100), seed=7
    )
    assert torch.equal(bigger[2], test_x)  # the test set does not depend on train_size


def test_synthetic_bundle_info():
    bundle = build_data(data_cfg())
    info = bundle.info
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == ("synthetic", 4, 3, 8)
    assert (info.train_size, info.val_size, info.test_size) == (200, 0, 40)
    assert len(info.mean) == len(info.std) == 3


def test_registry_and_unknown_name():
    from softlabels.data import DATASETS

    builtin = {n for n in list_datasets() if DATASETS.get(n).__module__.startswith("softlabels.")}
    assert builtin == {"fashion_mnist", "cifar10", "cifar100", "imagenet", "synthetic"}  # plugins may add more
    with pytest.raises(UserError, match="unknown dataset 'mnist'.*cifar10"):
        build_data(data_cfg("mnist"))


# ----------------------------------------------------------------------------- CIFAR
def write_fake_cifar(root: Path, hundred: bool = False, per_batch: int = 10) -> torch.Tensor:
    """Tiny CIFAR in torchvision's pickle layout; returns the uint8 (N, 3, 32, 32) training images."""
    rng = np.random.default_rng(0)
    variant = cifar_module.CIFAR100 if hundred else cifar_module.CIFAR10
    folder = root / variant.folder
    folder.mkdir(parents=True)
    train = []
    for name in variant.train_files + variant.test_files:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in np.arange(per_batch) % variant.num_classes]
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, variant.label_key: labels, "batch_label": name}, f, protocol=2)
        if name in variant.train_files:
            train.append(data)
    with (folder / variant.meta_file).open("wb") as f:
        pickle.dump({variant.names_key: [f"c{i}" for i in range(variant.num_classes)]}, f, protocol=2)
    return torch.from_numpy(np.concatenate(train).reshape(-1, 3, 32, 32))


def test_cifar10_fake_files_direct_and_via_torchvision(tmp_path, monkeypatch):
    images = write_fake_cifar(tmp_path)
    cfg = data_cfg("cifar10", root=str(tmp_path), augment=False, batch_size=16)
    bundle = build_data(cfg)  # checksums differ -> read directly
    info = bundle.info
    assert (info.num_classes, info.in_channels, info.image_size, info.train_size, info.test_size) == (10, 3, 32, 50, 10)
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.class_names[:2] == ("c0", "c1")
    x, _, i = collect(bundle.train)
    std, mean = torch.tensor(info.std).view(1, 3, 1, 1), torch.tensor(info.mean).view(1, 3, 1, 1)
    torch.testing.assert_close(x * std + mean, images[i].float() / 255, atol=1e-5, rtol=0)
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    via_tv = build_data(cfg)
    assert torch.equal(collect(via_tv.train)[0], x)


def test_cifar100_fake_and_errors(tmp_path):
    write_fake_cifar(tmp_path, hundred=True, per_batch=200)
    bundle = build_data(data_cfg("cifar100", root=str(tmp_path), train_subset=100))
    assert bundle.info.num_classes == 100 and bundle.info.train_size == 100 and bundle.info.std[0] == 0.2675
    assert torch.equal(torch.bincount(bundle.train.dataset_labels), torch.ones(100, dtype=torch.long))
    with pytest.raises(DataError, match="cifar-10-batches-py.*data.download: true"):
        build_data(data_cfg("cifar10", root=str(tmp_path)))
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"\x80\x02}q\x00(X")
    with pytest.raises(DataError, match="cifar-100-python/test"):
        build_data(data_cfg("cifar100", root=str(tmp_path)))


# ----------------------------------------------------------------------------- ImageNet
@pytest.fixture
def fake_imagenet(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for cls in ("n01", "n02"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for k in range(count):
                Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return tmp_path


def test_imagenet_fake_folder(fake_imagenet):
    cfg = data_cfg("imagenet", root=str(fake_imagenet), batch_size=4, eval_batch_size=3)
    bundle = build_data(cfg, seed=0)
    info = bundle.info
    assert (info.num_classes, info.image_size, info.train_size, info.test_size) == (2, 8, 6, 4)
    assert info.class_names == ("n01", "n02")
    assert len(bundle.train) == 2 and len(bundle.test) == 2
    x, y, i = collect(bundle.train)
    assert x.shape == (6, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.sort(i).values, torch.arange(6)) and torch.equal(y, (i >= 3).long())
    again = collect(build_data(cfg, seed=0).train)  # same (seed, epoch): same batches
    assert torch.equal(again[0], x) and torch.equal(again[2], i)
    bundle.train.set_epoch(1)
    assert not torch.equal(collect(bundle.train)[0][torch.argsort(collect(bundle.train)[2])], x[torch.argsort(i)])
    tx, ty, ti = collect(bundle.test)
    assert tx.shape == (4, 3, 8, 8) and torch.equal(ti, torch.arange(4)) and torch.equal(ty, torch.tensor([0, 0, 1, 1]))
    assert torch.equal(collect(bundle.test)[0], tx)


def test_imagenet_workers_val_split_and_missing(fake_imagenet, tmp_path):
    cfg = data_cfg("imagenet", root=str(fake_imagenet), batch_size=2, val_split=2)
    single = build_data(cfg, seed=1)
    multi = build_data(data_cfg("imagenet", root=str(fake_imagenet), batch_size=2, val_split=2, num_workers=2), seed=1)
    assert (single.info.train_size, single.info.val_size) == (4, 2)
    assert torch.equal(torch.bincount(single.val.dataset_labels), torch.tensor([1, 1]))
    a, b = collect(single.train), collect(multi.train)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])  # augmentation independent of workers
    with pytest.raises(DataError, match=str(tmp_path / "nowhere" / "train")):
        build_data(data_cfg("imagenet", root=str(tmp_path / "nowhere")))


# ----------------------------------------------------------------------------- typed configs
def test_each_dataset_validates_its_own_config_and_knows_its_traits(tmp_path, fake_imagenet):
    from softlabels.data import DATASET_CONFIGS, DatasetTraits
    from softlabels.data.cifar import Cifar10Config, Cifar100Config
    from softlabels.data.fashion_mnist import FashionMNISTConfig
    from softlabels.data.imagenet import ImageNetConfig
    from softlabels.data.synthetic import SyntheticDataConfig
    from softlabels.errors import ConfigError

    expected = {"fashion_mnist": (FashionMNISTConfig, DatasetTraits(10, 1)),
                "cifar10": (Cifar10Config, DatasetTraits(10, 3)),
                "cifar100": (Cifar100Config, DatasetTraits(100, 3)),
                "synthetic": (SyntheticDataConfig, DatasetTraits(4, 3)),
                "imagenet": (ImageNetConfig, DatasetTraits(2, 3))}
    for name, (cls, traits) in expected.items():
        cfg = data_cfg(name, **({"root": str(fake_imagenet)} if name == "imagenet" else {}))
        assert type(cfg) is cls and DATASET_CONFIGS[name] is cls and cfg.traits() == traits, name
    assert data_cfg("imagenet", root=str(tmp_path / "nowhere")).traits() == DatasetTraits(None, 3)
    # the synthetic shape is typed (unknown keys named); other datasets accept the key old run folders carry
    with pytest.raises(ConfigError, match=r"data\.synthetic\.colour"):
        data_cfg(synthetic={"colour": 3})
    legacy = data_config({"name": "cifar10", "synthetic": {"num_classes": 10}})
    assert legacy.model_dump()["synthetic"] == {"num_classes": 10}
    assert "synthetic" not in data_cfg("cifar10").model_dump()  # not written when not given
    with pytest.raises(ConfigError, match=r"key 'data\.name': unknown dataset 'mnist'"):
        data_config({"name": "mnist"})
    with pytest.raises(ConfigError, match=r"data\.eval_batch_size"):
        data_config({"name": "cifar10", "eval_batch_size": 0})
    with pytest.raises(ConfigError, match=r"data\.crop_size \(300\) must not exceed data\.resize_size"):
        data_config({"name": "imagenet", "crop_size": 300})
    assert "crop_size" not in data_config({"name": "imagenet"}).model_dump()  # ImageNet's own keys, at defaults
    with pytest.raises(ConfigError, match=r"unknown key 'data\.crop_size'"):
        data_config({"name": "cifar10", "crop_size": 8})  # not a CIFAR key


def test_a_base_config_is_resolved_to_the_dataset_class():
    """``DataConfig(name=...)`` (or a dict) handed to build_data is validated into the dataset's class once."""
    from softlabels.data import validate_data_config
    from softlabels.data.synthetic import SyntheticDataConfig

    base = DataConfig(name="synthetic", batch_size=16, synthetic={"num_classes": 3, "train_size": 30, "test_size": 9,
                                                                   "image_size": 8})
    typed = validate_data_config(base)
    assert type(typed) is SyntheticDataConfig and typed.synthetic.num_classes == 3 and typed.batch_size == 16
    assert validate_data_config(typed) is typed  # already typed: the same object
    bundle = build_data(base)
    assert bundle.info.num_classes == 3 and bundle.info.train_size == 30


def test_check_files_per_dataset(tmp_path, fake_imagenet):
    for name in ("cifar10", "cifar100", "imagenet"):
        with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
            data_cfg(name, root=str(tmp_path / "nowhere")).check_files()
    data_cfg("imagenet", root=str(fake_imagenet)).check_files()
    data_cfg("cifar10", root=str(tmp_path / "nowhere"), download=True).check_files()  # will be downloaded
    data_cfg("synthetic").check_files()  # nothing to find
    write_fake_cifar(tmp_path / "c")
    data_cfg("cifar10", root=str(tmp_path / "c")).check_files()
