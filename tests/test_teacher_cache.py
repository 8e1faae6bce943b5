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
