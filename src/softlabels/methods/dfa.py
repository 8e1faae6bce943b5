"""Differentiable Feature Aggregation search, DFA (Guan et al., ECCV 2020, https://arxiv.org/abs/2008.00506).

The paper has no public code; this is a reconstruction from its abstract and the reference notes
(docs/methods.md lists every choice made where the paper is silent). One config runs both stages.

**Aggregation.** For every paired stage i (the last ``min(N_s, N_t)`` stages of both models) the
*candidates* are the outputs of the blocks inside the teacher's stage i (``layerK.0``,
``layerK.1``, ... of a ResNet, found generically: the stage module's ``nn.Sequential``, or its only
``nn.Sequential`` child, keeping the blocks whose output has the stage output's shape; a stage
without such blocks has one candidate, itself). With architecture parameters alpha_i (one logit
per candidate, initialised to 0 = uniform)::

    F^t_i(alpha) = sum_k softmax(alpha_i)_k * F^t_{i,k}

**Stage 1, search** (the ``init_epochs`` phase, default 10 epochs). Each training step:

1. *architecture step* on a held-out batch: the **bridge loss** with gradients for alpha only,
   one step of Adam (DARTS: lr 3e-4, betas (0.5, 0.999), weight decay 1e-3; first-order). alpha
   stays out of the student optimizer (``requires_grad`` is off except inside this step, the
   gradient comes from ``torch.autograd.grad``, no ``.grad`` is left anywhere); its Adam moments
   are buffers in ``auxiliary["arch"]``, so checkpoints hold them and a resume is exact.
2. *weight step* (the trainer's) on the training batch with alpha fixed:
   ``ce_weight`` CE + ``weight`` x feature loss toward the current aggregation +
   ``bridge_weight`` x bridge loss (this trains the bridge connectors and the student).

Held-out batches (``search_split``): ``val`` takes them from the run's validation split
(``data.val_split`` > 0), cycled in order in chunks of the training batch size and restarted every
epoch; ``batch`` holds out the last ``holdout_fraction`` (0.5) of every training batch, whose other
part alone feeds the weight step's terms; ``auto`` (default) is ``val`` when the run has a
validation split, else ``batch``.

Bridge loss, averaged over the paired stages (both paths are CE on the labels)::

    L_bridge = 1/N sum_i [ CE(T_{>i}(C^st_i(F^s_i); alpha_{>i}), y)      student -> teacher
                         + CE(S_{>i}(C^ts_i(F^t_i(alpha_i))), y) ]      teacher -> student

``F^s_i`` is the student's stage-i output, ``C^st_i`` / ``C^ts_i`` are connectors (``ConvReg``:
conv + BN, plus a ReLU when the receiving model's stage output is non-negative), ``S_{>i}`` runs
the student's later stages and classifier on the replaced stage-i output, and ``T_{>i}`` runs the
frozen teacher's later stages and classifier with *each later stage's output replaced by its
aggregation* -- so the student -> teacher path (expressivity: can the aggregated teacher still
classify from what the student produces) moves alpha_{i+1..N} while the teacher -> student path
(learnability: can the student's later layers use the aggregated feature) moves alpha_i; the two
paths pull on the shared alphas. Stage outputs are replaced with forward hooks, so any zoo model
with ``stageK`` features works and no model code changes. The teacher stays frozen (eval mode, no
gradient to its weights); running BatchNorm statistics of the student and the teacher are left
untouched by bridged passes and by the architecture step (the held-out data and the bridged
features do not leak into the student's statistics); the connectors' BNs update in the weight step.

**Stage 2, distillation** with the found aggregation, alpha frozen (``aggregation: softmax`` keeps
the softmax weights, ``argmax`` uses only the strongest candidate): OFD's margin-ReLU partial L2
(``methods/ofd.py``) between a 1x1 conv + BN connector of the student's pre-ReLU stage feature and
the aggregation of the teacher's *pre-ReLU* candidates (each block's ``preact``; blocks without one
fall back to their raw outputs, with a warning), stage weights 1/2^(N-i-1), ÷ batch::

    loss = ce_weight * CE + weight (1e-3) * sum_i partial_l2(C_i(s_i), F^t_i, m_i) / B / 2^(N-i-1)

The margin of the aggregation is the same convex combination of the candidates' margins (each from
its block's last BN, as OFD, or estimated from sampled features when there is none).

Terms: search ``ce``, ``dfa``, ``bridge``; distillation ``ce``, ``dfa``. :meth:`diagnostics`
puts the aggregation weights (``dfa_<stage>_w<k>``) and the mean architecture-step bridge loss into
every metrics.jsonl row; the weights are also printed after every search epoch and when
distillation starts, and alpha is saved in ``last.pt`` / ``best.pt`` (``auxiliary["arch"]``).
``alpha_init`` starts from given logits (e.g. a finished search's, with ``init_epochs: 0`` to
distil a fresh student with a found aggregation, the DARTS "retrain" protocol).
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from softlabels.errors import ConfigError
from softlabels.features import FeatureCapture
from softlabels.methods._feature_utils import ConvReg, paired_stages
from softlabels.methods.base import Batch, Distiller, register_method
from softlabels.methods.ofd import MarginReLUParams, _connector, bn_margin, feature_margin, partial_l2


class DFAParams(MarginReLUParams):
    """Distillation as OFD (weight 1e-3, CE 1, 1x1 connector); search as first-order DARTS (unconfirmed)."""

    init_epochs: int = Field(10, ge=0, description="search epochs (stage 1, at the base LR) before distillation")
    bridge_weight: float = Field(1.0, ge=0, description="multiplies the bridge loss in the search's weight step")
    arch_lr: float = Field(3e-4, ge=0, description="Adam learning rate of the architecture parameters (DARTS)")
    arch_betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas of the architecture step (DARTS)")
    arch_weight_decay: float = Field(1e-3, ge=0, description="L2 weight decay of the architecture step (DARTS)")
    arch_eps: float = Field(1e-8, gt=0)
    search_split: Literal["auto", "val", "batch"] = Field(
        "auto", description="held-out data of the architecture step: the val split, part of each batch, or auto"
    )
    holdout_fraction: float = Field(0.5, gt=0, lt=1, description="share of each batch held out (search_split batch)")
    alpha_init: list[list[float]] | None = Field(
        None, description="initial architecture logits, one list per paired stage (default: zeros)"
    )
    aggregation: Literal["softmax", "argmax"] = Field(
        "softmax", description="stage 2 uses the softmax weights, or only the argmax candidate"
    )

    @field_validator("arch_betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("arch_betas must lie in [0, 1)")
        return v


# ----------------------------------------------------------------------------- helpers
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
    """The architecture logits alpha_i (``alpha.<i>``) and their Adam state (buffers ``m<i>``, ``v<i>``, ``step``)."""

    def __init__(self, logits: list[torch.Tensor]) -> None:
        super().__init__()
        self.alpha = nn.ParameterList([nn.Parameter(a.clone().float(), requires_grad=False) for a in logits])
        for i, a in enumerate(logits):
            self.register_buffer(f"m{i}", torch.zeros_like(a, dtype=torch.float32))
            self.register_buffer(f"v{i}", torch.zeros_like(a, dtype=torch.float32))
        self.register_buffer("step", torch.zeros((), dtype=torch.float64))

    def weights(self, mode: str = "softmax") -> list[torch.Tensor]:
        """Per stage (K_i,) aggregation weights: softmax of alpha_i, or the one-hot of its argmax."""
        if mode == "argmax":
            return [F.one_hot(a.detach().argmax(), a.numel()).float() for a in self.alpha]
        return [torch.softmax(a.float(), dim=0) for a in self.alpha]

    @torch.no_grad()
    def adam_step(self, grads: list[torch.Tensor], lr: float, betas: tuple[float, float], weight_decay: float,
                  eps: float) -> None:
        """``torch.optim.Adam``'s update (L2 weight decay added to the gradient, no amsgrad)."""
        self.step += 1
        t = float(self.step)
        b1, b2 = betas
        for i, (a, g) in enumerate(zip(self.alpha, grads)):
            m, v = getattr(self, f"m{i}"), getattr(self, f"v{i}")
            g = g.float()
            if weight_decay:
                g = g.add(a, alpha=weight_decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / (1 - b2**t) ** 0.5).add_(eps)
            a.addcdiv_(m, denom, value=-lr / (1 - b1**t))


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


# ----------------------------------------------------------------------------- the method
@register_method("dfa")
class DFA(Distiller):
    """Loss terms: ``ce``, ``dfa``, and ``bridge`` during the search (``init_epochs``)."""

    Params = DFAParams

    # ---------------------------------------------------------------- declarations
    def _layout(self) -> _Layout:
        cached = self.__dict__.get("_layout_cache")
        if cached is not None:
            return cached
        s_stages, t_stages = paired_stages(self.student, self.teacher, "DFA")
        s_layers = getattr(self.student, "feature_layers", {})
        s_distill = [f"{s}_pre_relu" for s in s_stages]
        if any(n not in s_layers for n in s_distill):
            s_distill = list(s_stages)
        cands, pres, is_pre = [], [], []
        for stage in t_stages:
            blocks = stage_candidates(self.teacher, stage)
            cands.append(blocks)
            if all(_has_module(self.teacher, f"{b}.preact") for b in blocks):
                pres.append([f"{b}.preact" for b in blocks])
                is_pre.append(True)
            else:
                pres.append(list(blocks))
                is_pre.append(False)
        layout = _Layout(list(s_stages), list(t_stages), s_distill, cands, pres, is_pre)
        self.__dict__["_layout_cache"] = layout
        return layout

    def student_features(self) -> list[str]:
        lay = self._layout()
        return list(dict.fromkeys(lay.s_distill + lay.s_stages))

    def teacher_features(self) -> list[str]:
        lay = self._layout()
        paths = [p for stage in lay.t_candidates for p in stage] + [p for stage in lay.t_pre for p in stage]
        return [f"module:{p}" for p in dict.fromkeys(paths)]

    # ---------------------------------------------------------------- life cycle
    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        p, lay = self.params, self._layout()
        device = sample_images.device
        if not all(lay.t_pre_relu):
            warnings.warn(
                f"DFA: the blocks of the teacher {type(self.teacher).__name__} have no pre-ReLU ('preact') outputs; "
                "distilling toward their raw outputs (margins estimated from sampled features)", stacklevel=2,
            )
        if not lay.s_distill[0].endswith("_pre_relu"):
            warnings.warn(
                f"DFA: student {type(self.student).__name__} has no pre-ReLU features; distilling its post-ReLU "
                "stage outputs instead", stacklevel=2,
            )
        s_feats, t_feats = self.sample_features(sample_images)
        # keep the candidates shaped like the stage output (the last block's)
        self.candidates: list[list[str]] = []
        self.candidates_pre: list[list[str]] = []
        for blocks, pres in zip(lay.t_candidates, lay.t_pre):
            shape = t_feats[f"module:{blocks[-1]}"].shape
            keep = [k for k, b in enumerate(blocks) if t_feats[f"module:{b}"].shape == shape
                    and t_feats[f"module:{pres[k]}"].shape == t_feats[f"module:{pres[-1]}"].shape]
            self.candidates.append([blocks[k] for k in keep])
            self.candidates_pre.append([pres[k] for k in keep])
        n = len(lay.s_stages)
        # architecture parameters
        if p.alpha_init is not None:
            sizes = [len(c) for c in self.candidates]
            if len(p.alpha_init) != n or [len(a) for a in p.alpha_init] != sizes:
                raise ConfigError(
                    f"method.alpha_init needs one list per paired stage with one logit per candidate, "
                    f"i.e. lengths {sizes}; got {[len(a) for a in p.alpha_init]}"
                )
            logits = [torch.tensor(a, dtype=torch.float32) for a in p.alpha_init]
        else:
            logits = [torch.zeros(len(c)) for c in self.candidates]
        self.auxiliary["arch"] = ArchParams(logits).to(device)
        # connectors: distillation (student pre-ReLU -> teacher channels) and the two bridge directions
        distill, st, ts, margins = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), []
        for i in range(n):
            s_pre = s_feats[lay.s_distill[i]]
            t_pre = [t_feats[f"module:{q}"] for q in self.candidates_pre[i]]
            distill.append(_connector(s_pre.shape[1], t_pre[0].shape[1], p.connector_kernel))
            s_out = s_feats[lay.s_stages[i]]
            t_out = t_feats[f"module:{self.candidates[i][-1]}"]
            st.append(ConvReg(s_out.shape, t_out.shape, relu=bool(t_out.min() >= 0)))
            ts.append(ConvReg(t_out.shape, s_out.shape, relu=bool(s_out.min() >= 0)))
            rows = []
            for block, feat in zip(self.candidates[i], t_pre):
                bn = _last_bn(self.teacher, block, feat.shape[1]) if lay.t_pre_relu[i] else None
                rows.append(bn_margin(bn.weight, bn.bias) if bn is not None else feature_margin(feat))
            margins.append(torch.stack(rows))
        self.auxiliary["connectors"] = distill.to(device)
        self.auxiliary["bridge_st"] = st.to(device)
        self.auxiliary["bridge_ts"] = ts.to(device)
        self.auxiliary["margins"] = _Margins(margins).to(device)
        # held-out data of the architecture step
        val = getattr(data, "val", None) if data is not None else None
        if p.search_split == "val" and val is None and self.init_epochs > 0:
            raise ConfigError("method.search_split is 'val' but the run has no validation split; set data.val_split "
                              "or use search_split: batch")
        self._val_loader = val if p.search_split in ("auto", "val") else None
        self._val_stream: Iterator | None = None
        self._diag: torch.Tensor | None = None
        self._announced = False

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._val_stream = None  # the held-out order restarts every epoch (exact resume)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and auxiliary parameters except alpha (it has its own Adam, on held-out data)."""
        arch = self.auxiliary["arch"] if "arch" in self.auxiliary else None
        own = {id(q) for q in arch.parameters()} if arch is not None else set()
        return [q for q in super().trainable_parameters() if id(q) not in own]

    # ---------------------------------------------------------------- aggregation
    @property
    def arch(self) -> ArchParams:
        return self.auxiliary["arch"]

    def aggregation_weights(self) -> list[list[float]]:
        """The aggregation weights stage 2 uses (softmax, or one-hot with ``aggregation: argmax``), per paired stage."""
        return [w.detach().cpu().tolist() for w in self.arch.weights(self.params.aggregation)]

    def _weights(self, searching: bool) -> list[torch.Tensor]:
        if searching:
            return [w.detach() for w in self.arch.weights("softmax")]
        return [w.detach() for w in self.arch.weights(self.params.aggregation)]

    # ---------------------------------------------------------------- losses
    def feature_loss(self, batch: Batch, weights: list[torch.Tensor]) -> torch.Tensor:
        """Unweighted feature loss: partial L2 toward the aggregated teacher features, ÷ batch, x 1/2^(N-i-1)."""
        lay = self._layout()
        n, bsz = len(lay.s_stages), batch.student_logits.shape[0]
        total = batch.student_logits.new_zeros((), dtype=torch.float32)
        for i in range(n):
            s = self.auxiliary["connectors"][i](batch.student_features[lay.s_distill[i]])
            w = weights[i]
            t = aggregate([batch.teacher_features[f"module:{q}"].detach().float() for q in self.candidates_pre[i]], w)
            margin = (w.view(-1, 1) * self.auxiliary["margins"][i]).sum(0).view(1, -1, 1, 1)
            if t.shape[-2:] != s.shape[-2:]:
                t = F.adaptive_avg_pool2d(t, s.shape[-2:])
            total = total + partial_l2(s, t, margin) / bsz / 2 ** (n - i - 1)
        return total

    def _teacher_from(self, i: int, x: torch.Tensor, images: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """Teacher logits with stage i's output replaced by ``x`` and every later stage's by its aggregation."""
        lay, teacher = self._layout(), self.teacher
        pairs: list[tuple[nn.Module, object]] = [(teacher.get_submodule(teacher.feature_layers[lay.t_stages[i]]),
                                                  _replace_with(x))]
        for j in range(i + 1, len(lay.t_stages)):
            store: dict[int, torch.Tensor] = {}
            for k, path in enumerate(self.candidates[j]):
                pairs.append((teacher.get_submodule(path), _store(store, k)))
            stage = teacher.get_submodule(teacher.feature_layers[lay.t_stages[j]])
            pairs.append((stage, _aggregate_from(store, len(self.candidates[j]), weights[j])))
        with forward_hooks(pairs), frozen_bn_stats(teacher):
            return teacher(images)

    def _student_from(self, i: int, y: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Student logits with stage i's output replaced by ``y`` (running BN statistics untouched)."""
        lay, student = self._layout(), self.student
        stage = student.get_submodule(student.feature_layers[lay.s_stages[i]])
        with forward_hooks([(stage, _replace_with(y))]), frozen_bn_stats(student):
            return student(images)

    def bridge_paths(self, images: torch.Tensor, targets: torch.Tensor, s_stage: dict[str, torch.Tensor],
                     t_cands: dict[str, torch.Tensor], weights: list[torch.Tensor]) -> tuple[list, list]:
        """Per paired stage the CE of the student -> teacher and of the teacher -> student path.

        Args:
            s_stage: {student stage name: its output (B, C, H, W)}.
            t_cands: {``module:<candidate path>``: teacher candidate output} (constants).
            weights: per paired stage the (K_i,) aggregation weights (alpha's graph attached or not).
        """
        lay = self._layout()
        st_losses, ts_losses = [], []
        for i in range(len(lay.s_stages)):
            x = self.auxiliary["bridge_st"][i](s_stage[lay.s_stages[i]])
            st_losses.append(F.cross_entropy(self._teacher_from(i, x, images, weights).float(), targets))
            agg = aggregate([t_cands[f"module:{q}"].detach() for q in self.candidates[i]], weights[i])
            y = self.auxiliary["bridge_ts"][i](agg)
            ts_losses.append(F.cross_entropy(self._student_from(i, y, images).float(), targets))
        return st_losses, ts_losses

    def bridge_loss(self, images, targets, s_stage, t_cands, weights) -> torch.Tensor:
        """Mean over paired stages of (student -> teacher CE + teacher -> student CE)."""
        st, ts = self.bridge_paths(images, targets, s_stage, t_cands, weights)
        return (sum(st) + sum(ts)) / len(st)

    # ---------------------------------------------------------------- architecture step
    def _held_out_chunk(self, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next validation chunk of ``size`` images (cycling the val split in order)."""
        if self._val_stream is None:
            self._val_stream = self._val_chunks(self._val_loader, max(size, 2))
        return next(self._val_stream, None)

    @staticmethod
    def _val_chunks(loader, size: int):
        while True:
            produced = False
            for images, targets, _ in loader:
                for s in range(0, targets.numel(), size):
                    if targets[s:s + size].numel() >= 2:  # BatchNorm in train mode needs two samples
                        produced = True
                        yield images[s:s + size], targets[s:s + size]
            if not produced:
                return

    def _plain_features(self, images: torch.Tensor) -> tuple[dict, dict]:
        """No-grad student stage outputs and teacher candidates of ``images`` (statistics untouched)."""
        lay = self._layout()
        t_names = [f"module:{q}" for stage in self.candidates for q in stage]
        with torch.no_grad(), frozen_bn_stats(self.student, self.teacher):
            with FeatureCapture(self.student, lay.s_stages) as cs:
                self.student(images)
            with FeatureCapture(self.teacher, t_names) as ct:
                self.teacher(images)
            return dict(cs.features), dict(ct.features)

    def architecture_step(self, images: torch.Tensor, targets: torch.Tensor, s_stage: dict | None = None,
                          t_cands: dict | None = None) -> torch.Tensor:
        """One Adam step of alpha on the bridge loss of held-out ``images``; returns that loss (detached).

        Runs in float32 with autocast off; gradients reach alpha only; no running statistics change.
        """
        p, arch = self.params, self.arch
        alphas = list(arch.alpha)
        with torch.autocast(images.device.type, enabled=False):
            images = images.float()
            if s_stage is None or t_cands is None:
                s_stage, t_cands = self._plain_features(images)
            s_stage = {k: v.detach().float() for k, v in s_stage.items()}
            t_cands = {k: v.detach().float() for k, v in t_cands.items()}
            try:
                with torch.enable_grad(), frozen_bn_stats(self):
                    for a in alphas:
                        a.requires_grad_(True)
                    loss = self.bridge_loss(images, targets, s_stage, t_cands, arch.weights("softmax"))
                    grads = torch.autograd.grad(loss, alphas, allow_unused=True)
            finally:
                for a in alphas:
                    a.requires_grad_(False)
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for g in grads:
                torch.distributed.all_reduce(g)
                g.div_(world)
        self.last_arch_grads = [g.detach().clone() for g in grads]
        arch.adam_step(grads, p.arch_lr, tuple(p.arch_betas), p.arch_weight_decay, p.arch_eps)
        loss = loss.detach()
        step = torch.stack([loss.double(), torch.ones((), dtype=torch.float64, device=loss.device)])
        self._diag = step if self._diag is None else self._diag + step
        return loss

    # ---------------------------------------------------------------- terms
    @staticmethod
    def _rows(batch: Batch, rows: slice) -> Batch:
        def cut(t):
            return None if t is None else t[rows]

        return Batch(
            images=batch.images[rows], targets=batch.targets[rows], student_logits=batch.student_logits[rows],
            teacher_logits=cut(batch.teacher_logits), indices=cut(batch.indices),
            student_features={k: v[rows] for k, v in batch.student_features.items()},
            teacher_features={k: v[rows] for k, v in batch.teacher_features.items()}, epoch=batch.epoch,
        )

    def _search_mode(self) -> str:
        p = self.params
        if p.search_split == "auto":
            return "val" if self._val_loader is not None else "batch"
        return p.search_split

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        searching = batch.epoch < self.init_epochs
        if searching and self.training:
            if self._search_mode() == "val":
                chunk = self._held_out_chunk(batch.targets.numel())
                if chunk is not None:
                    self.architecture_step(*chunk)
            else:
                bsz = batch.targets.numel()
                k = min(bsz - 2, max(1, round(bsz * (1 - p.holdout_fraction))))
                if k >= 1:  # at least one sample for the weights, two for the held-out BatchNorms
                    held = slice(k, None)
                    self.architecture_step(
                        batch.images[held], batch.targets[held],
                        {n: batch.student_features[n][held] for n in self._layout().s_stages},
                        {f"module:{q}": batch.teacher_features[f"module:{q}"][held]
                         for stage in self.candidates for q in stage},
                    )
                    batch = self._rows(batch, slice(0, k))
        weights = self._weights(searching)
        terms = {
            "ce": p.ce_weight * F.cross_entropy(batch.student_logits.float(), batch.targets),
            "dfa": p.weight * self.feature_loss(batch, weights),
        }
        if searching:
            lay = self._layout()
            s_stage = {n: batch.student_features[n] for n in lay.s_stages}
            bridge = self.bridge_loss(batch.images, batch.targets, s_stage, batch.teacher_features, weights)
            terms["bridge"] = p.bridge_weight * bridge
        return terms

    # ---------------------------------------------------------------- diagnostics
    def _is_main(self) -> bool:
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        return not dist or torch.distributed.get_rank() == 0

    def format_weights(self) -> str:
        lay = self._layout()
        return "; ".join(f"{t}: [{', '.join(f'{w:.3f}' for w in ws)}]"
                         for t, ws in zip(lay.t_stages, self.aggregation_weights()))

    def artifacts(self) -> dict[str, dict]:
        """``dfa_alpha.json`` for the run folder: alpha per teacher stage, the weights stage 2 uses, the phase."""
        lay = self._layout()
        return {"dfa_alpha.json": {
            "epoch": self.epoch + 1,
            "phase": "search" if self.epoch < self.init_epochs else "distill",
            "aggregation": self.params.aggregation,
            "stages": {t: {"candidates": list(c), "alpha": [float(a) for a in alpha], "weights": w}
                       for t, c, alpha, w in zip(lay.t_stages, self.candidates, self.arch.alpha,
                                                 self.aggregation_weights())},
        }}

    def diagnostics(self, reset: bool = True) -> dict[str, float]:
        """Aggregation weights ``dfa_<teacher stage>_w<k>`` and, after search steps, ``dfa_arch_bridge``
        (mean held-out bridge loss of the epoch's architecture steps). Prints the weights after
        every search epoch and once when distillation starts."""
        lay = self._layout()
        weights = self.aggregation_weights()
        out = {f"dfa_{t}_w{k}": w for t, ws in zip(lay.t_stages, weights) for k, w in enumerate(ws)}
        if self._diag is not None:
            loss, n = self._diag.tolist()
            out["dfa_arch_bridge"] = loss / n
        if reset:
            self._diag = None
        if self._is_main():
            if self.epoch < self.init_epochs:
                print(f"DFA search epoch {self.epoch + 1}/{self.init_epochs}, aggregation weights: "
                      f"{self.format_weights()}", file=sys.stderr, flush=True)
            elif not self._announced:
                alpha = [[round(float(a), 4) for a in t] for t in self.arch.alpha]
                print(f"DFA distilling with aggregation ({self.params.aggregation}) {self.format_weights()}; "
                      f"alpha {alpha}", file=sys.stderr, flush=True)
        if self.epoch >= self.init_epochs:
            self._announced = True
        return out
