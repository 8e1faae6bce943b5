"""Cached teacher outputs: one memory-mapped float32 file of teacher logits per (epoch slot, sample).

With augmentation off every epoch sees the same images, so one slot per sample suffices. With
augmentation on, our augmentation is a pure function of (data seed, epoch, sample), so epoch
``e``'s images are replayed exactly and each epoch gets its own slot (the idea behind FKD's stored
soft labels). Slots are filled on first use (by the first run, live teacher forward) and read by
every later run with the same teacher, data and seed: distillation then costs about what training
the student alone costs. A metadata file pins what the cache is valid for; a stale or mismatched
cache is refused with a message naming the path. Spot checks compare cached and live teacher
outputs at the start of every epoch.

Full logits are stored as float32, so a value read back is the live value bit for bit (float32, or
the bf16/fp16 output of an AMP forward, which float32 holds exactly); the run that fills the cache
trains on the values as stored (:meth:`TeacherCache.store` returns them). A cached run therefore
equals an uncached one exactly (amp off), and the filling run equals every reading run.

With ``topk = k`` only the k largest logits of each sample are kept (values float16, class indices
int16/int32) plus one "rest" logit per sample: the logit that gives each of the other C - k classes
an equal share of the teacher's remaining probability at T = 1. The reconstructed logits are exact
for the top k classes and spread the rest uniformly (the approximation of FKD / ReLabel's stored
top-k soft labels); the file shrinks from 2C to about 4k + 2 bytes per sample and epoch.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from softlabels.errors import CheckpointError

FORMAT = "softlabels-teacher-cache/2"  # /2: full logits stored as float32


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An exclusive advisory lock on ``lock_path`` (a no-op where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


SPOT_CHECK_ATOL = 2e-2  # relative; covers bf16 AMP forwards of other batch compositions and top-k rounding


class TeacherCache:
    """Logits of shape (slots, full_train_size, num_classes) in float32 + a filled mask.

    Args:
        path: folder of the cache (``logits.f32`` or, with top-k, ``topk_values.f16``,
            ``topk_index.bin``, ``rest.f16``; ``filled.u8``, ``meta.json``).
        meta: what the cache is valid for (teacher sha256, dataset, subset, seed, augmentation,
            classes, slots); compared with the stored meta when the folder exists.
    """

    def __init__(self, path: str | Path, meta: dict) -> None:
        self.path = Path(path)
        self.meta = {"format": FORMAT, **meta}
        self.slots, self.size, self.classes = int(meta["slots"]), int(meta["full_train_size"]), int(meta["num_classes"])
        self.topk = meta.get("topk")
        if self.topk is not None and not 1 <= int(self.topk) < self.classes:
            raise CheckpointError(
                f"teacher.cache_topk = {self.topk} must be between 1 and the number of classes - 1 ({self.classes - 1})"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        # Runs in parallel processes may open the same cache: creating it is done under a lock;
        # afterwards they only write identical values (logits before the filled flag).
        with _exclusive(self.path / ".lock"):
            self._open()
        self.hits = 0
        self.misses = 0

    def _open(self) -> None:
        """Check or write meta.json and map the two arrays (caller holds the lock)."""
        meta_file = self.path / "meta.json"
        if meta_file.is_file():
            stored = json.loads(meta_file.read_text())
            diffs = sorted(k for k in set(stored) | set(self.meta) if stored.get(k) != self.meta.get(k))
            if diffs:
                raise CheckpointError(
                    f"teacher cache {self.path} was made for a different setting ({', '.join(diffs)} differ); "
                    "delete the folder or set teacher.cache_path to a new one"
                )
            mode = "r+"
        else:
            meta_file.write_text(json.dumps(self.meta, indent=2))
            mode = "w+"
        width = self.classes if self.topk is None else int(self.topk)
        shape = (self.slots, self.size, width)
        try:
            if self.topk is None:
                self.logits = np.memmap(self.path / "logits.f32", dtype=np.float32, mode=mode, shape=shape)
            else:
                self.logits = np.memmap(self.path / "topk_values.f16", dtype=np.float16, mode=mode, shape=shape)
                index_dtype = np.int16 if self.classes <= np.iinfo(np.int16).max else np.int32
                self.index = np.memmap(self.path / "topk_index.bin", dtype=index_dtype, mode=mode, shape=shape)
                self.rest = np.memmap(self.path / "rest.f16", dtype=np.float16, mode=mode, shape=shape[:2])
            self.filled = np.memmap(self.path / "filled.u8", dtype=np.uint8, mode=mode, shape=(self.slots, self.size))
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"teacher cache {self.path} is truncated or unreadable ({exc}); delete it") from None

    def slot(self, epoch: int) -> int:
        return epoch % self.slots if self.slots > 1 else 0

    def lookup(self, epoch: int, indices: torch.Tensor) -> torch.Tensor | None:
        """Cached logits (batch, classes) float32 on the indices' device, or None if any is missing."""
        idx = indices.cpu().numpy()
        s = self.slot(epoch)
        if not self.filled[s, idx].all():
            self.misses += 1
            return None
        self.hits += 1
        return self._read(s, idx).to(indices.device, non_blocking=True)

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
        the reconstruction from the rounded top k and the rest logit).
        """
        idx = indices.cpu().numpy()
        s = self.slot(epoch)
        logits = logits.detach().float().cpu()
        if self.topk is None:
            self.logits[s, idx] = logits.numpy()
        else:
            values, index, rest = compress_topk(logits, int(self.topk))
            self.logits[s, idx] = values.numpy().astype(np.float16)
            self.index[s, idx] = index.numpy().astype(self.index.dtype)
            self.rest[s, idx] = rest.numpy().astype(np.float16)
        self.filled[s, idx] = 1
        return self._read(s, idx).to(indices.device, non_blocking=True)

    def check(self, cached: torch.Tensor, live: torch.Tensor) -> None:
        """Refuse the cache when cached and live teacher logits disagree beyond float16 rounding.

        With top-k storage the live logits go through the same compression before comparing.
        """
        if self.topk is not None:
            live = expand_topk(*compress_topk(live.detach().float().cpu(), int(self.topk)), self.classes)
            live = live.to(cached.device)
        err = (cached.float() - live.float()).abs()
        tol = SPOT_CHECK_ATOL * (1 + live.float().abs())
        if bool((err > tol).any()):
            raise CheckpointError(
                f"teacher cache {self.path} does not match the live teacher (max error {float(err.max()):.3g}): "
                "it is stale; delete the folder or set teacher.cache_path to a new one"
            )

    def flush(self) -> None:
        self.logits.flush()
        if self.topk is not None:
            self.index.flush()
            self.rest.flush()
        self.filled.flush()


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
