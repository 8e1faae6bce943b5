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
   one step of ``torch.optim.Adam`` (DARTS: lr 3e-4, betas (0.5, 0.999), weight decay 1e-3;
   first-order). alpha stays out of the student optimizer (``requires_grad`` is off except inside
   this step, the gradient comes from ``torch.autograd.grad`` and is cleared after the step, no
   ``.grad`` is left anywhere); the Adam is returned by :meth:`DFA.configure_optimizers` as
   ``"arch"`` (constant LR, stepped by the method), so the trainer checkpoints its moments and a
   resume is exact. Under torchrun alpha's gradient is averaged over processes first.
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
every metrics.jsonl row; the weights are also logged (the "softlabels" logger) after every search
epoch and when distillation starts, :meth:`artifacts` writes them to ``dfa_alpha.json``, and alpha
is saved in ``last.pt`` / ``best.pt`` (``auxiliary["arch"]``).
``alpha_init`` starts from given logits (e.g. a finished search's, with ``init_epochs: 0`` to
distil a fresh student with a found aggregation, the DARTS "retrain" protocol).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from softlabels.engine.optim import OptimizerSpec
from softlabels.errors import ConfigError
from softlabels.features import FeatureCapture
from softlabels.methods._dfa_parts import (  # noqa: F401  (aggregate, stage_candidates, ... are public here)
    ArchParams,
    _aggregate_from,
    _Layout,
    _Margins,
    _replace_with,
    _store,
    aggregate,
    batch_rows,
    build_layout,
    candidate_margins,
    forward_hooks,
    frozen_bn_stats,
    initial_alpha,
    stage_candidates,
    val_chunks,
)
from softlabels.methods._feature_utils import ConvReg
from softlabels.methods.base import Batch, Distiller, register_method
from softlabels.methods.ofd import MarginReLUParams, _connector, partial_l2


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




# ----------------------------------------------------------------------------- the method
@register_method("dfa")
class DFA(Distiller):
    """Loss terms: ``ce``, ``dfa``, and ``bridge`` during the search (``init_epochs``)."""

    Params = DFAParams

    # ---------------------------------------------------------------- declarations
    def _layout(self) -> _Layout:
        layout = self.__dict__.get("_layout_cache")
        if layout is None:
            layout = self.__dict__["_layout_cache"] = build_layout(self.student, self.teacher)
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
        self.auxiliary["arch"] = ArchParams(initial_alpha(p.alpha_init, self.candidates)).to(device)
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
            margins.append(candidate_margins(self.teacher, self.candidates[i], t_pre, lay.t_pre_relu[i]))
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

    @property
    def arch_optimizer(self) -> torch.optim.Adam:
        """alpha's Adam (made on first use, after :meth:`setup`; the trainer checkpoints it as "arch")."""
        opt = self.__dict__.get("_arch_optimizer")
        if opt is None:
            p = self.params
            opt = torch.optim.Adam(list(self.arch.alpha), lr=p.arch_lr, betas=tuple(p.arch_betas),
                                   weight_decay=p.arch_weight_decay, eps=p.arch_eps)
            self.__dict__["_arch_optimizer"] = opt
        return opt

    def configure_optimizers(self, optim, lr: float) -> dict[str, OptimizerSpec]:
        """The student's "main" optimizer and alpha's Adam ("arch": constant LR, stepped in the search)."""
        return {**super().configure_optimizers(optim, lr),
                "arch": OptimizerSpec(self.arch_optimizer, lr_rule="constant", stepped_by="method")}

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
            self._val_stream = val_chunks(self._val_loader, max(size, 2))
        return next(self._val_stream, None)

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
        arch = self.arch
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
        grads = [torch.zeros_like(a) if g is None else g.float() for a, g in zip(alphas, grads)]
        self.average_over_processes(grads)
        self.last_arch_grads = [g.detach().clone() for g in grads]
        opt = self.arch_optimizer
        for a, g in zip(alphas, grads):
            a.grad = g
        try:
            opt.step()
        finally:
            for a in alphas:
                a.grad = None
        loss = loss.detach()
        step = torch.stack([loss.double(), torch.ones((), dtype=torch.float64, device=loss.device)])
        self._diag = step if self._diag is None else self._diag + step
        return loss

    # ---------------------------------------------------------------- terms
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
                    batch = batch_rows(batch, slice(0, k))
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
        (mean held-out bridge loss of the epoch's architecture steps). Logs the weights after
        every search epoch and once when distillation starts."""
        lay = self._layout()
        weights = self.aggregation_weights()
        out = {f"dfa_{t}_w{k}": w for t, ws in zip(lay.t_stages, weights) for k, w in enumerate(ws)}
        if self._diag is not None:
            loss, n = self._diag.tolist()
            out["dfa_arch_bridge"] = loss / n
        if reset:
            self._diag = None
        if self.epoch < self.init_epochs:
            self.log.info(f"DFA search epoch {self.epoch + 1}/{self.init_epochs}, aggregation weights: "
                          f"{self.format_weights()}")
        elif not self._announced:
            alpha = [[round(float(a), 4) for a in t] for t in self.arch.alpha]
            self.log.info(f"DFA distilling with aggregation ({self.params.aggregation}) {self.format_weights()}; "
                          f"alpha {alpha}")
        if self.epoch >= self.init_epochs:
            self._announced = True
        return out
