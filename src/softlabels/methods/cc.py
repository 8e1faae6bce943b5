"""Correlation congruence, CC (Peng et al., ICCV 2019, https://arxiv.org/abs/1904.01944).

The penultimate ("pooled") features of student and teacher are linearly embedded to ``feat_dim``
(128) (``e_s``, ``e_t``; both embeddings train with the student, as in the CRD benchmark). By
default the embeddings are **not** L2-normalised, as in the reference codes (RepDistiller's
``LinearEmbed`` used by its ``train_student.py``, torchdistill's ``Linear4CCKD``); ``normalize:
true`` adds the normalisation (an option, not the benchmark's behaviour: it shrinks the loss to a
few per cent of the reference value, so beta 0.02 then means a far weaker term). Two forms of the
correlation loss:

* ``form: repdistiller`` (default; the CRD benchmark's ``Correlation``, what beta 0.02 was tuned
  for): with delta = |e_s - e_t| (B, D), consecutive samples of the batch are paired::

      L_CC = mean_{i < B-1} sum_d delta[i, d] * delta[i+1, d]

* ``form: gaussian`` (the paper's Eq. 5-7, as torchdistill's ``CCKDLoss`` with the ``gaussian``
  kernel): correlation matrices under a Gaussian RBF kernel approximated by its P-th order Taylor
  expansion, k(x, y) = exp(-2 gamma) sum_{p=0..P} (2 gamma)^p / p! (x.y)^p (exact for unit vectors;
  torchdistill applies it to unnormalised embeddings too). ``gaussian_distance: squared`` (default,
  the paper's Eq. 7) gives L_CC = ||C_t - C_s||_F^2 / B^2; ``norm`` gives torchdistill's
  ``torch.dist(C_s, C_t, 2) / B^2`` (the Frobenius norm, not squared). gamma 0.4, P 2.

Term ``cc`` = ``weight`` (beta 0.02) * L_CC, plus ``ce``. Departures: the default is the benchmark's
simplified form, not the paper's kernel matrix (offered as ``form: gaussian``, whose weight was not
tuned here); the paper also keeps the instance-level KD term, which the benchmark drops (combine
with ``cc+kd`` to restore it).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from softlabels.methods._feature_utils import SameFeature, ce_term, flat, float32_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class CCParams(MethodParams):
    """CRD-benchmark defaults (resnet32x4 -> resnet8x4): beta 0.02, 128-d embeddings, not normalised."""

    weight: float = Field(0.02, ge=0, description="beta: multiplies the correlation congruence loss")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")
    feat_dim: int = Field(128, ge=1, description="embedding dimension")
    form: Literal["repdistiller", "gaussian"] = Field("repdistiller", description="benchmark form or the paper's kernel")
    normalize: bool = Field(False, description="L2-normalise the embeddings (the reference codes do not)")
    gaussian_distance: Literal["squared", "norm"] = Field(
        "squared", description="form gaussian: squared Frobenius distance / B^2 (paper) or the norm / B^2 (torchdistill)")
    gamma: float = Field(0.4, gt=0, description="RBF kernel gamma (form: gaussian)")
    order: int = Field(2, ge=0, description="Taylor order P of the RBF kernel (form: gaussian)")
    feature: str = Field("pooled", description="feature embedded on both networks")


class LinearEmbed(nn.Module):
    """(N, ...) -> (N, dim_out) float32: a linear layer, L2-normalised only when ``normalize``."""

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(1)).float()
        return F.normalize(out, dim=1) if self.normalize else out


@float32_loss
def cc_loss(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """The CRD benchmark's correlation loss: mean over consecutive pairs of sum_d |Δ_i| |Δ_{i+1}|."""
    delta = (e_s.float() - e_t.float()).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


@float32_loss
def gaussian_correlation(e: torch.Tensor, gamma: float = 0.4, order: int = 2) -> torch.Tensor:
    """(B, D) embeddings -> (B, B) Taylor-approximated RBF kernel matrix, float32 (exact RBF for unit vectors)."""
    sim = e.float() @ e.float().t()
    out = torch.zeros_like(sim)
    for p in range(order + 1):
        out = out + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return out


@float32_loss
def cc_gaussian_loss(e_s: torch.Tensor, e_t: torch.Tensor, gamma: float = 0.4, order: int = 2,
                     distance: str = "squared") -> torch.Tensor:
    """||C_t - C_s||_F^2 / B^2 (``squared``, the paper) or ||C_t - C_s||_F / B^2 (``norm``, torchdistill)."""
    c_s, c_t = gaussian_correlation(e_s, gamma, order), gaussian_correlation(e_t, gamma, order)
    if distance == "norm":
        return torch.dist(c_s, c_t, 2) / e_s.shape[0] ** 2
    return F.mse_loss(c_s, c_t)


@register_method("cc")
class CC(SameFeature, Distiller):
    """Loss terms: ``ce`` and ``cc``."""

    Params = CCParams

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        p = self.params
        s_feats, t_feats = self.sample_features(sample_images)
        self.auxiliary["embed_s"] = LinearEmbed(flat(s_feats[p.feature]).shape[1], p.feat_dim, p.normalize)
        self.auxiliary["embed_t"] = LinearEmbed(flat(t_feats[p.feature]).shape[1], p.feat_dim, p.normalize)
        self.auxiliary.to(sample_images.device)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        e_s = self.auxiliary["embed_s"](batch.student_features[p.feature])
        e_t = self.auxiliary["embed_t"](batch.teacher_features[p.feature].detach())
        if p.form == "gaussian":
            loss = cc_gaussian_loss(e_s, e_t, p.gamma, p.order, p.gaussian_distance)
        else:
            loss = cc_loss(e_s, e_t)
        return {"ce": ce_term(batch, p.ce_weight), "cc": p.weight * loss}
