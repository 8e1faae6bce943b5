"""Teacher-logit cache: a cached run equals an uncached one, stale or damaged caches are refused."""
import json
import math

import numpy as np
import pytest
import torch

from softlabels.config import validate_config
from softlabels.engine import Trainer, train
from softlabels.engine.checkpoint import load_checkpoint
from softlabels.errors import CheckpointError, ConfigError


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _teacher(tiny_teacher, cache_path=None, **extra):
    t = {"name": "resnet8", "checkpoint": str(tiny_teacher)}
    if cache_path is not None:
        t.update(cache=True, cache_path=str(cache_path))
    return {**t, **extra}


def _same_weights(a, b):
    wa, wb = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


LOSS_KEYS = ("train_loss", "train_loss_kd", "train_loss_ce", "train_top1", "test_top1", "test_loss", "reg_fraction")


def test_cached_run_equals_uncached_run_bit_for_bit(tmp_path, tiny, tiny_teacher):
    """uncached == fill == read: every loss, accuracy and weight, exactly (float32 storage, amp off)."""
    cache = tmp_path / "cache"
    for name, path in (("live", None), ("fill", cache), ("read", cache)):
        train(validate_config(tiny(tmp_path, name=name, method={"name": "kd"},
                                   teacher=_teacher(tiny_teacher, path), epochs=2)))
    live, fill, read = (_rows(tmp_path / n) for n in ("live", "fill", "read"))
    assert fill[0]["teacher_cache_misses"] > 0 and fill[0]["teacher_cache_hits"] == 0
    assert all(r["teacher_cache_misses"] == 0 and r["teacher_cache_hits"] > 0 for r in read)
    for a, b, c in zip(live, fill, read):
        for key in LOSS_KEYS:
            assert a[key] == b[key] == c[key], key
    assert _same_weights(tmp_path / "live", tmp_path / "fill")
    assert _same_weights(tmp_path / "live", tmp_path / "read")


def test_topk_cache_fill_equals_read(tmp_path, tiny, tiny_teacher):
    """Top-k storage is lossy, but the run that fills it trains on the stored values: fill == read exactly."""
    for name in ("fill", "read"):
        train(validate_config(tiny(tmp_path, name=name, method={"name": "kd"}, epochs=1,
                                   teacher=_teacher(tiny_teacher, tmp_path / "cache", cache_topk=2))))
    fill, read = _rows(tmp_path / "fill"), _rows(tmp_path / "read")
    assert read[0]["teacher_cache_misses"] == 0
    assert all(fill[0][k] == read[0][k] for k in LOSS_KEYS)
    assert _same_weights(tmp_path / "fill", tmp_path / "read")


def test_teacher_cache_refused_for_other_slots_and_when_corrupted(tmp_path, tiny, tiny_teacher):
    def cfg(name, epochs=2):
        return validate_config(tiny(tmp_path, name=name, method={"name": "kd"}, epochs=epochs,
                                    teacher=_teacher(tiny_teacher, tmp_path / "cache")))

    train(cfg("first"))
    # a cache made for 2 epochs is refused for a 3-epoch run (different slots)
    with pytest.raises(CheckpointError, match="different setting.*slots"):
        Trainer(cfg("third", epochs=3))
    # a corrupted cache is caught by the spot check
    logits = np.memmap(tmp_path / "cache" / "logits.f32", dtype=np.float32, mode="r+")
    logits[:] = 7.0
    logits.flush()
    with pytest.raises(CheckpointError, match="does not match the live teacher"):
        train(cfg("fourth"))


def test_topk_compression_known_answer():
    from softlabels.engine.teacher_cache import compress_topk, expand_topk

    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 50.0, -60.0, 49.0]])
    values, index, rest = compress_topk(logits, 2)
    assert index.tolist() == [[0, 1], [1, 3]] and values.tolist() == [[3.0, 1.0], [50.0, 49.0]]
    full = expand_topk(values, index, rest, 4)
    p, q = logits.softmax(1), full.softmax(1)
    assert torch.allclose(q[:, :2][0], p[0, :2]) and torch.allclose(q[1, [1, 3]], p[1, [1, 3]])  # top k exact
    assert float(q[0, 2]) == pytest.approx(float(p[0, 2:].mean()), rel=1e-5)  # the rest: their mean share
    assert float(q[0, 3]) == pytest.approx(float(q[0, 2]))
    assert rest[0] == pytest.approx(math.log((1 + math.exp(-1)) / 2), abs=1e-5)  # log of the rest's mean share
    assert torch.isfinite(full).all() and float(q[1, [0, 2]].sum()) == pytest.approx(float(p[1, [0, 2]].sum()), rel=1e-4)


def test_teacher_cache_topk_stores_less_and_is_reused(tmp_path, tiny, tiny_teacher):
    def cfg(name, topk):
        return validate_config(tiny(tmp_path, name=name, method={"name": "wsl"}, epochs=1,
                                    teacher=_teacher(tiny_teacher, tmp_path / f"cache{topk}", cache_topk=topk)))

    train(cfg("fill", 2))
    train(cfg("read", 2))
    rows = _rows(tmp_path / "read")
    assert rows[0]["teacher_cache_misses"] == 0 and rows[0]["teacher_cache_hits"] > 0
    meta = json.loads((tmp_path / "cache2" / "meta.json").read_text())
    classes, samples = meta["num_classes"], meta["full_train_size"]
    assert (tmp_path / "cache2" / "topk_values.f16").stat().st_size == 2 * 2 * samples  # float16 x top 2
    assert classes > 2 and (tmp_path / "cache2" / "rest.f16").stat().st_size == 2 * samples
    with pytest.raises(CheckpointError, match="different setting.*topk"):
        Trainer(validate_config(tiny(tmp_path, name="other", method={"name": "wsl"}, epochs=1,
                                     teacher=_teacher(tiny_teacher, tmp_path / "cache2", cache_topk=3))))
    with pytest.raises(CheckpointError, match="cache_topk = 99"):
        Trainer(cfg("too_many", 99))


def test_teacher_cache_rejects_train_mode(tmp_path, tiny, tiny_teacher):
    with pytest.raises(ConfigError, match="train_mode"):
        validate_config(tiny(tmp_path, method={"name": "kd"},
                             teacher=_teacher(tiny_teacher, tmp_path / "cache", train_mode=True)))


# ---------------------------------------------------------------------- stale, damaged, corrupt caches
def _kd(tmp_path, tiny, tiny_teacher, name, cache=None, epochs=2, **extra):
    return validate_config(tiny(tmp_path, name=name, method={"name": "kd"}, epochs=epochs,
                                teacher=_teacher(tiny_teacher, tmp_path / "cache" if cache is None else cache),
                                **extra))


def _snapshot(folder):
    """{file name: bytes} of everything in a folder (hidden files included)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cache_filled_from_other_images_is_refused_by_fingerprint(tmp_path, tiny, tiny_teacher, monkeypatch):
    """Issue 16.4: a copy of the data with most images changed, same teacher.cache_path -> refused."""
    import softlabels.data.synthetic as synthetic

    train(_kd(tmp_path, tiny, tiny_teacher, "fill"))
    before = _snapshot(tmp_path / "cache")
    original = synthetic.in_memory_bundle

    def changed_images(cfg, *, train, **kw):
        images = train[0].clone()
        images[: int(0.85 * len(images))] = 255 - images[: int(0.85 * len(images))]
        return original(cfg, train=(images, train[1]), **kw)

    monkeypatch.setattr(synthetic, "in_memory_bundle", changed_images)
    with pytest.raises(CheckpointError, match=r"cache .*data_fingerprint differ; it was filled from other training"):
        Trainer(_kd(tmp_path, tiny, tiny_teacher, "other_images"))
    assert _snapshot(tmp_path / "cache") == before


def test_fingerprint_covers_images_and_subset_indices(tmp_path):
    from softlabels.data.memory import InMemoryLoader

    images = torch.randint(0, 256, (20, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(20) % 2

    def fp(imgs, indices=None):
        return InMemoryLoader(imgs, labels, indices, batch_size=4, mean=[0.5], std=[0.5]).fingerprint()

    changed = images.clone()
    changed[7, 0, 1, 1] ^= 1  # one bit of one pixel
    assert fp(images) == fp(images.clone())
    assert fp(images) != fp(changed)
    assert fp(images, torch.arange(10)) != fp(images, torch.arange(1, 11)) != fp(images)


def test_loader_without_fingerprint_cannot_use_the_cache(tmp_path, tiny, tiny_teacher):
    from types import SimpleNamespace

    from softlabels.engine.teacher_cache import open_teacher_cache

    exp = _kd(tmp_path, tiny, tiny_teacher, "folder")
    data = SimpleNamespace(train=SimpleNamespace(augment=True, full_size=8), info=SimpleNamespace(name="imagenet"))
    method = SimpleNamespace(teacher_features=lambda: [])
    with pytest.raises(ConfigError, match="^teacher.cache needs training images it can fingerprint.*'imagenet'"):
        open_teacher_cache(exp, {"sha256": "0" * 64}, data, method, 2)
    assert not (tmp_path / "cache").exists()


def _cache(path, steps=None, slots=2, size=12, classes=3):
    from softlabels.engine.teacher_cache import TeacherCache

    meta = {"slots": slots, "full_train_size": size, "num_classes": classes, "topk": None}
    return TeacherCache(path, meta, steps_per_epoch=steps, check_seed=0)


def test_spot_check_covers_a_seeded_random_batch_not_only_the_first(tmp_path):
    """Only samples outside the first batch are stale: the per-epoch random batch finds them."""
    steps, batch = 6, 2
    live = torch.arange(36, dtype=torch.float32).view(12, 3)

    def run_epoch(cache, epoch, teacher):
        for b in range(steps):
            idx = torch.arange(b * batch, (b + 1) * batch)
            cache.teacher_logits(epoch, idx, lambda idx=idx: teacher[idx])

    fill = _cache(tmp_path / "c", steps)
    for epoch in (0, 1):
        run_epoch(fill, epoch, live)
    fill.flush()

    def checked_batches(cache):
        return [[b for b in range(steps) if cache._count_batch(e)] for e in range(3)]

    checked = checked_batches(_cache(tmp_path / "c", steps))
    assert all(c[0] == 0 for c in checked)  # the first batch of every epoch ...
    assert any(len(c) == 2 for c in checked)  # ... and a random one besides it
    assert checked_batches(_cache(tmp_path / "c", steps)) == checked  # chosen from a seed: reproducible
    epoch = next(e for e, c in enumerate(checked) if len(c) == 2)
    stale = live.clone()
    stale[batch:] += 5.0  # every sample outside the first batch changed
    with pytest.raises(CheckpointError, match="does not match the live teacher"):
        run_epoch(_cache(tmp_path / "c", steps), epoch, stale)
    run_epoch(_cache(tmp_path / "c"), epoch, stale)  # without steps_per_epoch only the first batch is checked


def test_non_finite_cached_logits_are_a_corrupt_cache(tmp_path, tiny, tiny_teacher):
    """Issue 16.7: NaN in the cache passes a comparison-based spot check; it is refused by name."""
    train(_kd(tmp_path, tiny, tiny_teacher, "fill", epochs=1))
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    logits = np.memmap(tmp_path / "cache" / "logits.f32", dtype=np.float32, mode="r+",
                       shape=(meta["slots"], meta["full_train_size"], meta["num_classes"]))
    logits[0, :, 1] = np.nan
    logits.flush()
    del logits
    with pytest.raises(CheckpointError, match=r"teacher cache .*cache holds non-finite logits \(epoch 1, sample \d+\)"):
        train(_kd(tmp_path, tiny, tiny_teacher, "read", epochs=1))


@pytest.mark.parametrize("damage", ["truncate", "missing_filled"])
def test_truncated_cache_is_refused_and_left_unmodified(tmp_path, tiny, tiny_teacher, damage):
    """Issue 16.8: the refused file is not zero-extended (nor is anything else in the folder touched)."""
    train(_kd(tmp_path, tiny, tiny_teacher, "fill", epochs=1))
    folder = tmp_path / "cache"
    if damage == "truncate":
        data = (folder / "logits.f32").read_bytes()
        (folder / "logits.f32").write_bytes(data[: len(data) // 3])
        match = r"is truncated or incomplete \(logits.f32 has \d+ bytes, expected \d+\)"
    else:
        (folder / "filled.u8").unlink()
        match = r"is truncated or incomplete \(filled.u8 is missing\)"
    before = _snapshot(folder)
    with pytest.raises(CheckpointError, match=match):
        Trainer(_kd(tmp_path, tiny, tiny_teacher, "read", epochs=1))
    assert _snapshot(folder) == before


def test_damaged_meta_is_a_one_line_error_naming_the_file(tmp_path, tiny, tiny_teacher, capsys):
    """Issue 16.17: a damaged meta.json -> one line naming it, exit status 2, folder untouched."""
    import yaml

    from softlabels.cli import main

    train(_kd(tmp_path, tiny, tiny_teacher, "fill", epochs=1))
    meta = tmp_path / "cache" / "meta.json"
    meta.write_text(meta.read_text()[:40])
    before = _snapshot(tmp_path / "cache")
    with pytest.raises(CheckpointError, match=r"meta.json"):
        Trainer(_kd(tmp_path, tiny, tiny_teacher, "read", epochs=1))
    cfg = tiny(tmp_path, name="cli", method={"name": "kd"}, epochs=1,
               teacher=_teacher(tiny_teacher, tmp_path / "cache"))
    (tmp_path / "cli.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["train", str(tmp_path / "cli.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(meta) in err[0] and "damaged" in err[0] and "Traceback" not in err[0]
    assert _snapshot(tmp_path / "cache") == before


def test_folder_with_other_files_is_not_taken_as_a_cache(tmp_path, tiny, tiny_teacher):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="holds other files .*notes.txt.*not a teacher cache"):
        Trainer(_kd(tmp_path, tiny, tiny_teacher, "fill", epochs=1))
    assert _snapshot(folder) == {"notes.txt": b"mine"}


# ---------------------------------------------------------------------- data.aug_seed: one cache for a sweep of seeds
def _per_sample_images(seed, aug_seed, epoch):
    from conftest import tiny_experiment
    from softlabels.data import build_data

    cfg = tiny_experiment("/unused")
    cfg["data"]["aug_seed"] = aug_seed
    loader = build_data(validate_config(cfg).data, seed=seed).train
    loader.set_epoch(epoch)
    images, order = {}, []
    for x, _, idx in loader:
        order += idx.tolist()
        images.update({int(i): x[k] for k, i in enumerate(idx)})
    return images, order


def test_aug_seed_fixes_each_samples_augmentation_independently_of_the_seed():
    for epoch in (0, 1):
        a, order_a = _per_sample_images(0, 5, epoch)
        b, order_b = _per_sample_images(1, 5, epoch)
        assert order_a != order_b  # the order stays tied to the run's seed
        assert a.keys() == b.keys() and all(torch.equal(a[i], b[i]) for i in a)  # same augmented image per sample
    other, _ = _per_sample_images(0, 6, 0)
    plain0, _ = _per_sample_images(0, None, 0)
    plain1, _ = _per_sample_images(1, None, 0)
    assert any(not torch.equal(a[i], other[i]) for i in a)  # another aug_seed: other crops/flips
    assert any(not torch.equal(plain0[i], plain1[i]) for i in plain0)  # without aug_seed: tied to the seed
    e0, _ = _per_sample_images(0, 5, 0)
    assert any(not torch.equal(e0[i], a[i]) for i in a)  # and still new crops every epoch


def test_seeds_with_one_aug_seed_share_one_cache_and_differ_only_by_init_and_order(tmp_path, tiny, tiny_teacher):
    def run(name, seed, cache):
        cfg = tiny(tmp_path, name=name, method={"name": "kd"}, epochs=2, seed=seed,
                   teacher={"name": "resnet8", "checkpoint": str(tiny_teacher), "cache": cache})
        cfg["data"]["aug_seed"] = 3
        train(validate_config(cfg))
        return _rows(tmp_path / name)

    run("seed0", 0, True)
    cached = run("seed1", 1, True)
    folders = list((tmp_path / "teacher_cache").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("_a3_aug")  # one cache (default path) for both seeds
    assert all(r["teacher_cache_misses"] == 0 and r["teacher_cache_hits"] > 0 for r in cached)
    live = run("seed1_live", 1, False)
    # seed 1 reading seed 0's teacher outputs trains exactly as seed 1 with a live teacher here: a
    # sample's teacher logits do not depend on the other samples of its batch (CPU, equal batch sizes;
    # in general they agree up to the float rounding of the teacher's forward)
    for a, b in zip(live, cached):
        for key in LOSS_KEYS:
            assert b[key] == a[key], key
    assert not _same_weights(tmp_path / "seed0", tmp_path / "seed1")  # seeds still differ (init, order)


def test_store_writes_only_unfilled_samples_and_returns_what_is_stored(tmp_path):
    cache = _cache(tmp_path / "c", slots=1, size=6, classes=3)
    first = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert torch.equal(cache.store(0, torch.tensor([0, 1]), first), first)
    other = torch.full((3, 3), 9.0)  # samples 0 and 1 again (other values) plus the new sample 2
    got = cache.store(0, torch.tensor([1, 2, 0]), other)
    assert torch.equal(got, torch.tensor([[4.0, 5.0, 6.0], [9.0, 9.0, 9.0], [1.0, 2.0, 3.0]]))
    assert torch.equal(cache.lookup(0, torch.tensor([0, 1, 2])), got[[2, 0, 1]])
    assert cache.lookup(0, torch.tensor([2, 3])) is None  # sample 3 never stored
    nan = torch.tensor([[float("nan"), 0.0, 0.0]])
    assert cache.store(0, torch.tensor([3]), nan) is nan and cache.lookup(0, torch.tensor([3])) is None
