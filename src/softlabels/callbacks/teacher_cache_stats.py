"""Built-in: teacher-cache hits and misses of the epoch (and a flush of the cache file)."""
from __future__ import annotations

from softlabels.callbacks.base import Callback


class TeacherCacheStats(Callback):
    """on_epoch_end: flush the cache, add ``teacher_cache_hits`` / ``teacher_cache_misses``, reset them."""

    order = 30

    def on_epoch_end(self, trainer, record: dict) -> None:
        cache = trainer.method.teacher_cache
        if cache is None:
            return
        cache.flush()
        record.update(teacher_cache_hits=cache.hits, teacher_cache_misses=cache.misses)
        cache.hits = cache.misses = 0
