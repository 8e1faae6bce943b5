"""Checks of analysis options: one-line :class:`AnalysisError` messages naming the option."""
from __future__ import annotations

import math
from collections.abc import Sequence

from softlabels.errors import UserError

__all__ = ["AnalysisError", "check_checkpoint", "check_seeds", "check_values"]


class AnalysisError(UserError):
    """An analysis was asked for something it cannot do (bad list values, too few splits, a foreign folder)."""


def check_values(values: Sequence, what: str, *, positive: bool = False) -> list:
    """``values`` unchanged if each is a finite number (> 0 with ``positive``) listed once; else AnalysisError
    naming the option ``what``."""
    if not values:
        raise AnalysisError(f"{what}: give at least one value")
    seen = set()
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise AnalysisError(f"{what}: {v!r} is not a number")
        if positive and v <= 0:
            raise AnalysisError(f"{what}: values must be > 0, got {v!r}")
        if v in seen:
            raise AnalysisError(f"{what}: {v!r} is listed twice")
        seen.add(v)
    return list(values)


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds`` unchanged if each is a whole number >= 0 listed once; else AnalysisError."""
    seeds = check_values(seeds, "--seeds")
    for s in seeds:
        if not isinstance(s, int) or s < 0:
            raise AnalysisError(f"--seeds: {s!r} is not a whole number >= 0")
    return seeds


def check_checkpoint(checkpoint: str) -> str:
    """``"last"``: the analyses evaluate final weights. ``"best"`` is refused: split runs have no validation
    split, so their best epoch would have been chosen on the test set."""
    if checkpoint == "best":
        raise AnalysisError("checkpoint 'best' would evaluate weights chosen on the test set (split runs have no "
                            "validation split); the analyses use the final weights, checkpoint 'last'")
    if checkpoint != "last":
        raise AnalysisError(f"checkpoint must be 'last', got {checkpoint!r}")
    return checkpoint
