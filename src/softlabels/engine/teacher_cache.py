"""Cached teacher outputs: one memory-mapped float32 file of teacher logits per (epoch slot, sample).

With augmentation off every epoch sees the same images, so one slot per sample suffices. With
augmentation on, our augmentation is a pure function of (augmentation seed, epoch, sample), so
epoch ``e``'s images are replayed exactly and each epoch gets its own slot (the idea behind FKD's
stored soft labels). Slots are filled on first use (by the first run, live teacher forward) and
read by every later run with the same teacher, training images and augmentation stream: distillation
then costs about what training the student alone costs. With ``data.aug_seed`` set, the
augmentation of a sample no longer depends on the run's seed, so the seeds of a sweep share one cache.

Full logits are stored as float32, so a value read back is the live value bit for bit (float32, or
the bf16/fp16 output of an AMP forward, which float32 holds exactly); the run that fills the cache
trains on the values as stored (:meth:`TeacherCache.store` returns them). A cached run therefore
equals an uncached one exactly (same seed, amp off), and the filling run equals every reading run.

What the cache is valid for is pinned in ``meta.json``, including a fingerprint of the training
images (:meth:`InMemoryLoader.fingerprint`); a mismatched, truncated, damaged or non-finite cache
is refused with one line naming the path, and a refused cache is never modified. Each epoch the
first batch and one seeded random batch are also computed live and compared with the cache.

With ``topk = k`` only the k largest logits of each sample are kept (values float16, class indices
int16/int32) plus one "rest" logit per sample: the logit that gives each of the other C - k classes
an equal share of the teacher's remaining probability at T = 1. The reconstructed logits are exact
for the top k classes and spread the rest uniformly (the approximation of FKD / ReLabel's stored
top-k soft labels); the file shrinks from 4C to about 4k + 2 bytes per sample and epoch.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from softlabels.errors import CheckpointError, ConfigError
from softlabels.io import atomic_write_text

FORMAT = "softlabels-teacher-cache/2"  # /2: full logits stored as float32, data fingerprint in meta
META = "meta.json"
SPOT_CHECK_ATOL = 2e-2  # relative; covers bf16 AMP forwards of other batch compositions and top-k rounding
STREAM_SPOT_CHECK = 15  # seed stream of the per-epoch random spot-check batch (see data.base)

_HINTS = {"data_fingerprint": "it was filled from other training images"}


@contextlib.contextmanager
def _exclusive(folder: Path):
    """An exclusive advisory lock on the folder itself (no lock file: a refused cache stays untouched)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"teacher cache {path} {why}; delete the folder or set teacher.cache_path to a new one")


class TeacherCache:
    """Logits of shape (slots, full_train_size, num_classes) in float32 + a filled mask.

    Args:
        path: folder of the cache (``logits.f32`` or, with top-k, ``topk_values.f16``,
            ``topk_index.bin``, ``rest.f16``; ``filled.u8``, ``meta.json``).
        meta: what the cache is valid for (teacher sha256, dataset, data fingerprint, augmentation
            seed, classes, slots, ...); compared with the stored meta when the folder exists.
        steps_per_epoch: batches per epoch; with it one seeded random batch per epoch is spot-checked
            besides the first.
        check_seed: seed of the choice of that batch.
    """

    def __init__(self, path: str | Path, meta: dict, *, steps_per_epoch: int | None = None,
                 check_seed: int = 0) -> None:
        self.path = Path(path)
        self.meta = {"format": FORMAT, **meta}
        self.slots, self.size, self.classes = int(meta["slots"]), int(meta["full_train_size"]), int(meta["num_classes"])
        self.topk = meta.get("topk")
        if self.topk is not None and not 1 <= int(self.topk) < self.classes:
            raise CheckpointError(
                f"teacher.cache_topk = {self.topk} must be between 1 and the number of classes - 1 ({self.classes - 1})"
            )
        if self.path.exists() and not self.path.is_dir():
            raise _refuse(self.path, "is a file, not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        # Runs in parallel processes may open the same cache: creating it is done under a lock;
        # afterwards they only write identical values (logits before the filled flag).
        with _exclusive(self.path):
            self._open()
        self.steps_per_epoch = steps_per_epoch
        self.check_seed = int(check_seed)
        self._epoch: int | None = None
        self._batch = 0
        self._check_batches: set[int] = set()
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ files
    def _files(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """{file name: (dtype, shape)} of the arrays this cache holds."""
        width = self.classes if self.topk is None else int(self.topk)
        shape = (self.slots, self.size, width)
        if self.topk is None:
            files = {"logits.f32": (np.dtype(np.float32), shape)}
        else:
            index_dtype = np.int16 if self.classes <= np.iinfo(np.int16).max else np.int32
            files = {"topk_values.f16": (np.dtype(np.float16), shape),
                     "topk_index.bin": (np.dtype(index_dtype), shape),
                     "rest.f16": (np.dtype(np.float16), shape[:2])}
        files["filled.u8"] = (np.dtype(np.uint8), (self.slots, self.size))
        return files

    def _open(self) -> None:
        """Check or create the files and map the arrays (caller holds the lock).

        An existing cache is checked completely (meta, then every file's exact size) before any
        file is opened for writing, so a refused cache is left byte for byte as it was.
        """
        files = self._files()
        meta_file = self.path / META
        if meta_file.is_file():
            try:
                stored = json.loads(meta_file.read_text(encoding="utf-8"))
                if not isinstance(stored, dict):
                    raise ValueError("not a JSON object")
            except (UnicodeDecodeError, ValueError) as exc:
                raise _refuse(self.path, f"has a damaged {meta_file} ({exc})") from None
            diffs = sorted(k for k in set(stored) | set(self.meta) if stored.get(k) != self.meta.get(k))
            if diffs:
                hints = "".join(f"; {_HINTS[k]}" for k in diffs if k in _HINTS)
                raise _refuse(self.path, f"was made for a different setting ({', '.join(diffs)} differ{hints})")
            for name, (dtype, shape) in files.items():
                f = self.path / name
                expected = int(np.prod(shape)) * dtype.itemsize
                size = f.stat().st_size if f.is_file() else None
                if size != expected:
                    got = "is missing" if size is None else f"has {size} bytes, expected {expected}"
                    raise _refuse(self.path, f"is truncated or incomplete ({name} {got})")
            mode = "r+"
        else:
            ours = set(files) | {META, ".lock"}
            foreign = sorted(p.name for p in self.path.iterdir()
                             if p.name not in ours and not (p.name.startswith(".") and p.name.endswith(".tmp")))
            if foreign:
                raise _refuse(self.path, f"has no {META} but holds other files ({', '.join(foreign[:3])}): "
                                         "it is not a teacher cache")
            mode = "w+"  # a new cache, or one whose creation was interrupted before meta.json
        try:
            arrays = {name: np.memmap(self.path / name, dtype=dtype, mode=mode, shape=shape)
                      for name, (dtype, shape) in files.items()}
        except (ValueError, OSError) as exc:
            raise _refuse(self.path, f"is unreadable ({exc})") from None
        if mode == "w+":
            for array in arrays.values():
                array.flush()
            atomic_write_text(meta_file, json.dumps(self.meta, indent=2) + "\n")  # last: marks it complete
        self.filled = arrays["filled.u8"]
        if self.topk is None:
            self.logits = arrays["logits.f32"]
        else:
            self.logits, self.index, self.rest = (arrays[n] for n in ("topk_values.f16", "topk_index.bin", "rest.f16"))

    # ------------------------------------------------------------------ per batch
    def slot(self, epoch: int) -> int:
        return epoch % self.slots if self.slots > 1 else 0

    def teacher_logits(self, epoch: int, indices: torch.Tensor, live: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Logits (batch, classes) for the samples ``indices`` in ``epoch``: cached, or ``live()`` stored.

        ``live`` runs the teacher on this batch; it is also called to spot-check the first batch and
        one seeded random batch of every epoch against the cache.
        """
        check = self._count_batch(epoch)
        cached = self.lookup(epoch, indices)
        if cached is None:
            return self.store(epoch, indices, live())
        if check:
            self.check(cached, live())
        return cached

    def _count_batch(self, epoch: int) -> bool:
        """Advance the batch counter of ``epoch``; True for the batches to spot-check."""
        if epoch != self._epoch:
            self._epoch, self._batch = epoch, 0
            self._check_batches = {0}
            if self.steps_per_epoch:
                from softlabels.data.base import generator

                gen = generator(self.check_seed, epoch, STREAM_SPOT_CHECK)
                self._check_batches.add(int(torch.randint(0, self.steps_per_epoch, (1,), generator=gen)))
        batch, self._batch = self._batch, self._batch + 1
        return batch in self._check_batches

    def lookup(self, epoch: int, indices: torch.Tensor) -> torch.Tensor | None:
        """Cached logits (batch, classes) float32 on the indices' device, or None if any is missing.

        Raises CheckpointError when a cached value is NaN or infinite (a corrupt cache).
        """
        idx = indices.cpu().numpy()
        s = self.slot(epoch)
        if not self.filled[s, idx].all():
            self.misses += 1
            return None
        self.hits += 1
        values = self._read(s, idx)
        finite = torch.isfinite(values).all(dim=1)
        if not bool(finite.all()):
            sample = int(idx[int((~finite).nonzero()[0])])
            raise _refuse(self.path, f"holds non-finite logits (epoch {epoch + 1}, sample {sample}): it is corrupt")
        return values.to(indices.device, non_blocking=True)

    def _read(self, s: int, idx: np.ndarray) -> torch.Tensor:
        """Stored logits of slot ``s`` for sample indices ``idx``: float32 (batch, classes) on the CPU."""
        values = torch.from_numpy(np.asarray(self.logits[s, idx], dtype=np.float32))
        if self.topk is not None:
            index = torch.from_numpy(np.asarray(self.index[s, idx], dtype=np.int64))
            rest = torch.from_numpy(np.asarray(self.rest[s, idx], dtype=np.float32))
            values = expand_topk(values, index, rest, self.classes)
        return values

    def store(self, epoch: int, indices: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Store live logits (batch, classes) and return them AS STORED (float32, on their device).

        The caller trains on the returned values, so the run that fills the cache sees exactly what
        every later run reads (full logits: float32 storage, the live values bit for bit; top-k:
        the reconstruction from the rounded top k and the rest logit). Only samples not yet filled
        are written: a filled value is never overwritten. Non-finite live logits are returned
        unchanged and not stored (the run's own finiteness check then stops it).
        """
        cpu = logits.detach().float().cpu()
        if not bool(torch.isfinite(cpu).all()):
            return logits
        idx = indices.cpu().numpy()
        s = self.slot(epoch)
        new = self.filled[s, idx] == 0
        rows, cpu = idx[new], cpu[torch.from_numpy(new)]
        if rows.size:
            if self.topk is None:
                self.logits[s, rows] = cpu.numpy()
            else:
                values, index, rest = compress_topk(cpu, int(self.topk))
                self.logits[s, rows] = values.numpy().astype(np.float16)
                self.index[s, rows] = index.numpy().astype(self.index.dtype)
                self.rest[s, rows] = rest.numpy().astype(np.float16)
            self.filled[s, rows] = 1  # after the values: a reader never sees a flag without its logits
        return self._read(s, idx).to(logits.device, non_blocking=True)

    def check(self, cached: torch.Tensor, live: torch.Tensor) -> None:
        """Refuse the cache when cached and live teacher logits disagree beyond rounding.

        With top-k storage the live logits go through the same compression before comparing.
        """
        live = live.detach().float()
        if self.topk is not None:
            live = expand_topk(*compress_topk(live.cpu(), int(self.topk)), self.classes).to(cached.device)
        err = (cached.float() - live).abs()
        tol = SPOT_CHECK_ATOL * (1 + live.abs())
        if not bool((err <= tol).all()):  # NaN compares false: a NaN anywhere fails the check
            raise _refuse(self.path, f"does not match the live teacher (max error {float(err.max()):.3g}): it is stale")

    def flush(self) -> None:
        self.logits.flush()
        if self.topk is not None:
            self.index.flush()
            self.rest.flush()
        self.filled.flush()


def open_teacher_cache(exp: Any, teacher_info: dict, data: Any, method: Any, total_epochs: int) -> TeacherCache:
    """The :class:`TeacherCache` of a run (``exp.teacher.cache`` is on).

    Args:
        exp: the validated Experiment; teacher_info: ``load_teacher``'s dict (``sha256``);
        data: the DataBundle (its train loader must offer ``fingerprint()``); method: the Distiller;
        total_epochs: epochs of the run including an initialisation phase (one slot each when augmented).
    Raises ConfigError for methods that use teacher features and for loaders without a fingerprint.
    """
    d = exp.data
    if method.teacher_features():
        raise ConfigError(
            f"teacher.cache stores logits only, but method '{exp.method.name}' also uses teacher features; "
            "turn teacher.cache off"
        )
    fingerprint = getattr(data.train, "fingerprint", None)
    if fingerprint is None:
        raise ConfigError(
            f"teacher.cache needs training images it can fingerprint, and the '{data.info.name}' loader "
            f"({type(data.train).__name__}) offers none; turn teacher.cache off"
        )
    augmented = bool(getattr(data.train, "augment", False))
    aug_seed = getattr(d, "aug_seed", None)
    stream_seed = exp.seed if aug_seed is None else aug_seed
    meta = {
        "teacher": exp.teacher.name, "teacher_sha256": teacher_info["sha256"],
        "dataset": data.info.name, "data_fingerprint": fingerprint(),
        "train_subset": d.train_subset, "val_split": d.val_split, "split_seed": d.split_seed,
        "augment": augmented, "crop_padding": d.crop_padding if augmented else 0,
        "flip": d.flip if augmented else False, "amp": exp.runtime.amp,
        "slots": total_epochs if augmented else 1, "full_train_size": data.train.full_size,
        "num_classes": data.info.num_classes, "topk": exp.teacher.cache_topk,
    }
    if augmented:  # the images of an epoch depend on the augmentation stream (and on the order without aug_seed)
        meta.update({"seed": exp.seed} if aug_seed is None else {"aug_seed": aug_seed})
    path = exp.teacher.cache_path
    if path is None:
        key = f"{teacher_info['sha256'][:12]}_{data.info.name}_{meta['data_fingerprint'][:8]}"
        if augmented:
            key += f"_s{exp.seed}_aug" if aug_seed is None else f"_a{aug_seed}_aug"
        path = Path(exp.output_dir) / "teacher_cache" / key
    return TeacherCache(path, meta, steps_per_epoch=len(data.train), check_seed=stream_seed)


def compress_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values (B, k), class indices (B, k), rest logit (B,)) of float32 logits (B, C).

    The rest logit r = logsumexp(other logits) - log(C - k) gives each of the C - k other classes
    their mean probability at T = 1, so the total probability of the top k is kept exactly.
    """
    logits = logits.float()
    values, index = logits.topk(k, dim=1)
    others = logits.scatter(1, index, float("-inf"))
    rest = torch.logsumexp(others, dim=1) - math.log(logits.shape[1] - k)
    return values, index, rest


def expand_topk(values: torch.Tensor, index: torch.Tensor, rest: torch.Tensor, classes: int) -> torch.Tensor:
    """Full logits (B, C): ``rest`` everywhere, the stored top-k values at their classes."""
    full = rest.float()[:, None].expand(-1, classes).clone()
    return full.scatter_(1, index.long(), values.float())
