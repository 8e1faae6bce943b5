"""Accuracy counting. (The metric-file helpers moved to :mod:`softlabels.io`.)"""
from __future__ import annotations

import torch

# Moved to softlabels.io (the one writer module); re-exported until every caller imports from there.
from softlabels.io import append_jsonl, read_jsonl, write_csv, write_jsonl  # noqa: F401


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at the class count)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hit = top.eq(targets.view(-1, 1))
    return {k: int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks}
