"""DFA's building blocks: teacher-stage candidates, aggregation, hook helpers, alpha, margins.

Kept apart from ``dfa.py`` (the method itself) so each file stays readable; everything here is
re-exported by ``softlabels.methods.dfa``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.errors import ConfigError
from softlabels.methods._feature_utils import paired_stages
from softlabels.methods.base import Batch
from softlabels.methods.ofd import bn_margin, feature_margin


def stage_candidates(model: nn.Module, stage: str) -> list[str]:
    """Module paths of the blocks inside ``model``'s feature ``stage`` (the stage itself if it has none).

    The blocks are the children of the stage module when it is an ``nn.Sequential``, else of its
    only ``nn.Sequential`` child (WRN's ``NetworkBlock.layer``). Not filtered by shape.
    """
    path = model.feature_layers[stage]
    module = model.get_submodule(path)
    seq_path = None
    if isinstance(module, nn.Sequential):
        seq_path = path
    else:
        seqs = [name for name, child in module.named_children() if isinstance(child, nn.Sequential)]
        if len(seqs) == 1:
            seq_path = f"{path}.{seqs[0]}"
    if seq_path is None or len(model.get_submodule(seq_path)) == 0:
        return [path]
    return [f"{seq_path}.{k}" for k in range(len(model.get_submodule(seq_path)))]


def aggregate(features: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[k] * features[k]`` (features of one shape, weights (K,))."""
    out = features[0] * weights[0].to(features[0].dtype)
    for k in range(1, len(features)):
        out = out + features[k] * weights[k].to(features[k].dtype)
    return out


@contextlib.contextmanager
def forward_hooks(pairs: list[tuple[nn.Module, object]]) -> Iterator[None]:
    """Register ``(module, hook)`` forward hooks (in order) for the duration of the block."""
    handles = [module.register_forward_hook(hook) for module, hook in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def frozen_bn_stats(*modules: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep normalising with batch statistics (train mode) but their running
    statistics and ``num_batches_tracked`` are restored unchanged (momentum 0 inside the block)."""
    saved, seen = [], set()
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and id(m) not in seen:
                seen.add(id(m))
                count = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
                saved.append((m, m.momentum, count))
                m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def _store(store: dict, key: int):
    def hook(_module, _inputs, output):
        store[key] = output

    return hook


def _replace_with(value: torch.Tensor):
    def hook(_module, _inputs, _output):
        return value

    return hook


def _aggregate_from(store: dict, count: int, weights: torch.Tensor):
    def hook(_module, _inputs, _output):
        return aggregate([store[k] for k in range(count)], weights)

    return hook


class ArchParams(nn.Module):
    """The architecture logits alpha_i (``alpha.<i>``), one (K_i,) parameter per paired stage."""

    def __init__(self, logits: list[torch.Tensor]) -> None:
        super().__init__()
        self.alpha = nn.ParameterList([nn.Parameter(a.clone().float(), requires_grad=False) for a in logits])

    def weights(self, mode: str = "softmax") -> list[torch.Tensor]:
        """Per stage (K_i,) aggregation weights: softmax of alpha_i, or the one-hot of its argmax."""
        if mode == "argmax":
            return [F.one_hot(a.detach().argmax(), a.numel()).float() for a in self.alpha]
        return [torch.softmax(a.float(), dim=0) for a in self.alpha]


class _Margins(nn.Module):
    """Per paired stage a (K_i, C_i) buffer ``margin<i>``: the margin of every candidate's channels."""

    def __init__(self, margins: list[torch.Tensor]) -> None:
        super().__init__()
        for i, m in enumerate(margins):
            self.register_buffer(f"margin{i}", m.clone())

    def __getitem__(self, i: int) -> torch.Tensor:
        return getattr(self, f"margin{i}")


@dataclass
class _Layout:
    """Which features DFA uses (structure only, before shapes are known)."""

    s_stages: list[str]  # paired student stage names (post-ReLU outputs, the bridge's inputs)
    t_stages: list[str]  # paired teacher stage names
    s_distill: list[str]  # student features distilled in stage 2 (pre-ReLU when declared)
    t_candidates: list[list[str]]  # teacher candidate block paths per paired stage (unfiltered)
    t_pre: list[list[str]]  # their pre-ReLU paths (``<block>.preact``), or the blocks themselves
    t_pre_relu: list[bool]  # whether t_pre really are pre-ReLU features


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _last_bn(model: nn.Module, block_path: str, channels: int) -> nn.BatchNorm2d | None:
    """The last BatchNorm2d directly owned by the block (OFD's ``get_bn_before_relu`` rule)."""
    bns = [m for m in model.get_submodule(block_path).children() if isinstance(m, nn.BatchNorm2d)]
    bn = bns[-1] if bns else None
    return bn if bn is not None and bn.affine and bn.num_features == channels else None


def build_layout(student: nn.Module, teacher: nn.Module) -> _Layout:
    """Which student/teacher features DFA pairs, distils and aggregates (structure only)."""
    s_stages, t_stages = paired_stages(student, teacher, "DFA")
    s_layers = getattr(student, "feature_layers", {})
    s_distill = [f"{s}_pre_relu" for s in s_stages]
    if any(n not in s_layers for n in s_distill):
        s_distill = list(s_stages)
    cands, pres, is_pre = [], [], []
    for stage in t_stages:
        blocks = stage_candidates(teacher, stage)
        cands.append(blocks)
        if all(_has_module(teacher, f"{b}.preact") for b in blocks):
            pres.append([f"{b}.preact" for b in blocks])
            is_pre.append(True)
        else:
            pres.append(list(blocks))
            is_pre.append(False)
    return _Layout(list(s_stages), list(t_stages), s_distill, cands, pres, is_pre)


def val_chunks(loader, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (images, targets) chunks of ``size`` from ``loader``, in order (chunks under two samples
    skipped: BatchNorm in train mode needs two); ends only when the loader yields nothing usable."""
    while True:
        produced = False
        for images, targets, _ in loader:
            for s in range(0, targets.numel(), size):
                if targets[s:s + size].numel() >= 2:
                    produced = True
                    yield images[s:s + size], targets[s:s + size]
        if not produced:
            return


def batch_rows(batch: Batch, rows: slice) -> Batch:
    """The :class:`Batch` restricted to ``rows`` (every per-sample tensor cut alike)."""
    def cut(t):
        return None if t is None else t[rows]

    return Batch(
        images=batch.images[rows], targets=batch.targets[rows], student_logits=batch.student_logits[rows],
        teacher_logits=cut(batch.teacher_logits), indices=cut(batch.indices),
        student_features={k: v[rows] for k, v in batch.student_features.items()},
        teacher_features={k: v[rows] for k, v in batch.teacher_features.items()}, epoch=batch.epoch,
    )


def initial_alpha(alpha_init: list[list[float]] | None, candidates: list[list[str]]) -> list[torch.Tensor]:
    """Starting architecture logits: ``method.alpha_init`` checked against the candidate counts, else zeros."""
    if alpha_init is None:
        return [torch.zeros(len(c)) for c in candidates]
    sizes = [len(c) for c in candidates]
    if len(alpha_init) != len(candidates) or [len(a) for a in alpha_init] != sizes:
        raise ConfigError(
            f"method.alpha_init needs one list per paired stage with one logit per candidate, "
            f"i.e. lengths {sizes}; got {[len(a) for a in alpha_init]}"
        )
    return [torch.tensor(a, dtype=torch.float32) for a in alpha_init]


def candidate_margins(teacher: nn.Module, blocks: list[str], feats: list[torch.Tensor], pre_relu: bool) -> torch.Tensor:
    """(K, C) margins of one stage's candidates: from each block's last BN (OFD) when the features are
    pre-ReLU and it has one, else estimated from the sampled features."""
    rows = []
    for block, feat in zip(blocks, feats):
        bn = _last_bn(teacher, block, feat.shape[1]) if pre_relu else None
        rows.append(bn_margin(bn.weight, bn.bias) if bn is not None else feature_margin(feat))
    return torch.stack(rows)
