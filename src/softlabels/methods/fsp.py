"""Flow of Solution Procedure, FSP (Yim et al., CVPR 2017: "A Gift from Knowledge Distillation").

The FSP matrix of two consecutive feature maps F1 (N, C1, H, W) and F2 (N, C2, H', W') is the
Gram matrix over spatial positions (the larger map is average-pooled to the smaller size)::

    G[n, j, i] = mean_{h,w} F2[n, j, h, w] * F1[n, i, h, w]          (N, C2, C1)

computed for (stem, stage1), (stage1, stage2), ... of student and teacher; the loss is
``sum over pairs of mean((G_s - G_t)^2)`` (CRD benchmark / RepDistiller form). As in the
benchmark, **FSP is applied only in the initialisation phase** (``init_epochs``, default 30; term
``fsp``); the main phase is CE (+ KD when ``kd_weight`` > 0).

The matrices of student and teacher are compared entry by entry, so every paired layer must have
the same channel count in both networks (and the same number of stages); otherwise
:meth:`FSP.setup` raises a :class:`~softlabels.errors.ConfigError`. That is why FSP is "n/a" for
WRN-40-2 -> WRN-40-1 in the CRD table: the stages have 32/64/128 channels in the teacher and
16/32/64 in the student.

``weight`` defaults to 1.0, not the ``-b 50`` of RepDistiller's run script: there beta multiplies
the main-phase FSP term, which is identically zero, while the init-phase FSP loss is unweighted.
Set ``weight: 50`` to scale the init-phase loss by the listed beta instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from softlabels.errors import ConfigError
from softlabels.features import stage_names
from softlabels.losses import kd_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class FSPParams(MethodParams):
    """Defaults reproduce RepDistiller's FSP (unweighted init-phase loss, 30 init epochs, CE 1, no KD)."""

    init_epochs: int = Field(30, ge=0, description="epochs of the FSP-only initialisation phase (at the base LR)")
    weight: float = Field(
        1.0, ge=0,
        description="multiplies the init-phase FSP loss (RepDistiller: unweighted; its beta 50 scales a zero term)",
    )
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label CE (main phase)")
    kd_weight: float = Field(0.0, ge=0, description="multiplies T^2 * KL(teacher || student) (main phase; 0 = off)")
    temperature: float = Field(4.0, gt=0, description="KD temperature (used when kd_weight > 0)")


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """FSP matrix (N, C_top, C_bottom) of two maps (N, C, H, W); the larger map is average-pooled first."""
    bottom, top = bottom.float(), top.float()
    bh, bw = bottom.shape[-2:]
    th, tw = top.shape[-2:]
    if bh * bw > th * tw:
        bottom = F.adaptive_avg_pool2d(bottom, (th, tw))
    elif bh * bw < th * tw:
        top = F.adaptive_avg_pool2d(top, (bh, bw))
    n = bottom.shape[0]
    b = bottom.reshape(n, bottom.shape[1], -1)
    t = top.reshape(n, top.shape[1], -1)
    return torch.bmm(t, b.transpose(1, 2)) / b.shape[-1]


def fsp_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum over consecutive pairs of mean squared differences between student and teacher FSP matrices."""
    total = student_maps[0].new_zeros((), dtype=torch.float32)
    for i in range(len(student_maps) - 1):
        gs = fsp_matrix(student_maps[i], student_maps[i + 1])
        gt = fsp_matrix(teacher_maps[i], teacher_maps[i + 1])
        total = total + (gs - gt).pow(2).mean()
    return total


def _layer_names(model) -> list[str]:
    layers = getattr(model, "feature_layers", {})
    if "stem" not in layers or not stage_names(model):
        raise ConfigError(f"FSP needs the stem and stage features; {type(model).__name__} declares {', '.join(layers)}")
    return ["stem", *stage_names(model)]


@register_method("fsp")
class FSP(Distiller):
    """Loss terms: ``fsp`` during the init phase; ``ce`` (and ``kd`` when ``kd_weight`` > 0) afterwards."""

    Params = FSPParams

    def student_features(self) -> list[str]:
        return _layer_names(self.student)

    def teacher_features(self) -> list[str]:
        return _layer_names(self.teacher)

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        s_feats, t_feats = self.sample_features(sample_images)
        s_names, t_names = self.student_features(), self.teacher_features()
        s_ch = [s_feats[n].shape[1] for n in s_names]
        t_ch = [t_feats[n].shape[1] for n in t_names]
        if s_ch != t_ch:
            raise ConfigError(
                f"FSP compares student and teacher FSP matrices entry by entry, so each layer ({', '.join(s_names)}) "
                f"needs the same channel count in both networks: student {type(self.student).__name__} has {s_ch}, "
                f"teacher {type(self.teacher).__name__} has {t_ch} (why FSP is n/a for WRN-40-2 -> WRN-40-1 in the "
                "CRD benchmark); choose another method or a pair with matching widths"
            )

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        if batch.epoch < self.init_epochs:
            s = [batch.student_features[n] for n in self.student_features()]
            t = [batch.teacher_features[n].detach() for n in self.teacher_features()]
            return {"fsp": p.weight * fsp_loss(s, t)}
        terms = {"ce": p.ce_weight * F.cross_entropy(batch.student_logits.float(), batch.targets)}
        if p.kd_weight > 0:
            terms["kd"] = p.kd_weight * kd_loss(batch.student_logits, batch.teacher_logits, p.temperature)
        return terms
