"""Disjoint stratified splits of an analysis's training pool, and the plan of models trained on them."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from softlabels.analysis.base import AnalysisBase
from softlabels.analysis.checks import AnalysisError

__all__ = ["SEED_STRIDE", "SplitPlan", "disjoint_stratified_splits", "plan_splits", "training_pool"]

_STREAM_PARTITION = 1001  # seed stream of the N-way partitions (see softlabels.data.base.generator)
SEED_STRIDE = 1000  # split-run training seed = seed * 1000 + partition * N + split


def disjoint_stratified_splits(labels: torch.Tensor, n: int, seed: int, partition: int = 0) -> list[torch.Tensor]:
    """Partition positions ``0..len(labels)-1`` into ``n`` disjoint, stratified parts of equal size.

    Args:
        labels: int64 (P,) labels of the pool.
        n: number of parts (>= 1).
        seed, partition: the partition is a pure function of both (different ``partition`` values give
            independent random partitions).
    Returns:
        ``n`` sorted int64 tensors of positions into ``labels``, disjoint and covering all of them; each
        class is dealt round-robin, so part sizes, and each class's count in each part, differ by at most 1.
    """
    from softlabels.data.base import generator

    labels = labels.cpu().long()
    if n < 1:
        raise AnalysisError(f"the number of splits must be >= 1, got {n}")
    perm = torch.randperm(labels.numel(), generator=generator(seed, _STREAM_PARTITION, partition))
    order = perm[torch.sort(labels[perm], stable=True).indices]  # grouped by class, random within a class
    return [torch.sort(order[j::n]).values for j in range(n)]


def training_pool(base: AnalysisBase) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of the base's training set after ``data.train_subset`` (drawn with the base seed).

    Indices are positions in the full original training set (int64, sorted); labels int64, aligned.
    """
    from softlabels.data import build_data

    data = base.exp.data.model_copy(update={"val_split": 0})
    loader = build_data(data, device="cpu", seed=base.seed).train
    return loader.indices.clone(), loader.dataset_labels.clone()


@dataclass(frozen=True)
class SplitPlan:
    """One model of a split experiment: train on ``indices`` (positions in the full training set)."""

    partition: int
    seed: int  # the user-facing seed
    split: int
    group: int  # MSE group: the N models of one (partition, seed) were trained on disjoint sets
    train_seed: int
    indices: torch.Tensor = field(repr=False)

    def run_name(self, prefix: str, n: int) -> str:
        return f"{prefix}_n{n}_p{self.partition}_s{self.split}_seed{self.seed}"


def plan_splits(base: AnalysisBase, splits: int, partitions: int = 1, seeds: Sequence[int] = (0,)) -> list[SplitPlan]:
    """The models of a split experiment: ``partitions`` random N-way stratified partitions of the training
    pool (:func:`training_pool`), one model per part and seed; the same plan for every method and width."""
    if splits < 2:
        raise AnalysisError(f"--splits must be >= 2 (disjoint training sets for the variance), got {splits}")
    if partitions < 1:
        raise AnalysisError(f"--partitions must be >= 1, got {partitions}")
    if splits * partitions > SEED_STRIDE:
        raise AnalysisError(f"--splits x --partitions must be at most {SEED_STRIDE}")
    pool, labels = training_pool(base)
    smallest = int(torch.bincount(labels).min()) if labels.numel() else 0
    if pool.numel() < splits or smallest < splits:
        from softlabels.analysis.runner import log_progress

        log_progress(f"warning: the training pool ({pool.numel()} images, smallest class {smallest}) "
                     f"has fewer images of some class than --splits {splits}")
    plans = []
    for p in range(partitions):
        parts = disjoint_stratified_splits(labels, splits, base.seed, p)
        for si, s in enumerate(seeds):
            for j, part in enumerate(parts):
                plans.append(SplitPlan(p, int(s), j, p * len(seeds) + si, int(s) * SEED_STRIDE + p * splits + j,
                                       pool[part]))
    return plans
