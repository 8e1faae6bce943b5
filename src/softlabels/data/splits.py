"""Seeded, stratified subsets and held-out splits of a labelled set."""

from __future__ import annotations

import math
import numbers

import torch

from softlabels.data.base import STREAM_SUBSET, STREAM_VAL, generator
from softlabels.errors import UserError


def resolve_count(value: object, total: int, key: str, allow_zero: bool = False) -> int:
    """Turn a fraction in (0, 1] or a count of images into a count in [1, total].

    A float in (0, 1] is a fraction (1.0 = everything); an int, or an integral float > 1, is a
    count. ``allow_zero`` accepts 0 (meaning "none"). Anything else raises UserError naming ``key``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{key} must be a fraction in (0, 1] or a number of images, got {value!r}")
    if allow_zero and value == 0:
        return 0
    if isinstance(value, numbers.Integral) or (float(value) > 1 and float(value).is_integer()):
        count = int(value)
        if count <= 0:
            raise UserError(f"{key} must be > 0, got {value!r}")
        if count > total:
            raise UserError(f"{key} = {count} is larger than the {total} images available")
        return count
    fraction = float(value)
    if not 0 < fraction <= 1:
        raise UserError(f"{key} must be a fraction in (0, 1] or a number of images, got {value!r}")
    return max(1, min(total, round(fraction * total)))


def stratified_split(labels: torch.Tensor, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``count`` positions of ``labels`` with (as nearly as possible) the class proportions.

    Args:
        labels: int64 (N,) class labels.
        count: how many positions to pick, 0..N.
        gen: CPU generator; the result is a pure function of its state.
    Returns:
        (chosen, rest): int64 positions into ``labels``, each sorted ascending, disjoint, covering 0..N-1.
    Per class c with n_c members the quota is floor(count * n_c / N); the remaining images go to
    the classes with the largest fractional parts (ties: lower class first).
    """
    labels = labels.cpu().long()
    total = labels.numel()
    if not 0 <= count <= total:
        raise ValueError(f"count must be in [0, {total}], got {count}")
    _, inverse, class_counts = torch.unique(labels, return_inverse=True, return_counts=True)
    exact = class_counts.double() * count / max(total, 1)
    quota = exact.floor().long()
    missing = count - int(quota.sum())
    if missing > 0:
        order = torch.sort(-(exact - quota.double()), stable=True).indices
        quota[order[:missing]] += 1
    # One random permutation, then group by class (stable): each group is in random order and
    # the first quota[c] members of group c are chosen.
    perm = torch.randperm(total, generator=gen)
    grouped = perm[torch.sort(inverse[perm], stable=True).indices]
    group_start = torch.cumsum(class_counts, 0) - class_counts
    rank = torch.arange(total) - group_start[inverse[grouped]]
    take = rank < quota[inverse[grouped]]
    chosen = torch.sort(grouped[take]).values
    rest = torch.sort(grouped[~take]).values
    return chosen, rest


def subset_and_split(
    labels: torch.Tensor, train_subset: object, val_split: object, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``data.train_subset`` then ``data.val_split`` to a full training set.

    Args:
        labels: int64 (N,) labels of the full training set.
        train_subset: None, a fraction in (0, 1] or a count.
        val_split: 0, a fraction in (0, 1) of the (subset) training set or a count.
        seed: both choices are pure functions of it.
    Returns:
        (train_indices, val_indices): int64, sorted, disjoint indices into the full training set.
    """
    total = labels.numel()
    pool = torch.arange(total)
    if train_subset is not None:
        count = resolve_count(train_subset, total, "data.train_subset")
        if count < total:
            pool, _ = stratified_split(labels, count, generator(seed, STREAM_SUBSET))
    val_count = resolve_count(val_split, pool.numel(), "data.val_split", allow_zero=True)
    if val_count == 0:
        return pool, pool[:0]
    if val_count >= pool.numel():
        raise UserError(
            f"data.val_split = {val_split!r} leaves no training images (the training set has {pool.numel()})"
        )
    val_pos, train_pos = stratified_split(labels[pool], val_count, generator(seed, STREAM_VAL))
    return pool[train_pos], pool[val_pos]


def split_seed(cfg: object, run_seed: int) -> int:
    """Seed of ``train_subset`` and ``val_split``: ``data.split_seed`` when set, else the run's seed.

    Fixing ``data.split_seed`` keeps the same training/validation images across runs with
    different seeds (so a teacher trained on that training part never sees the validation part).
    """
    value = getattr(cfg, "split_seed", None)
    return int(run_seed) if value is None else int(value)


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch for ``num_samples`` samples."""
    return num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)
