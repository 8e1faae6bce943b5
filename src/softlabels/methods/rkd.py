"""Relational knowledge distillation, RKD (Park et al., CVPR 2019, https://arxiv.org/abs/1904.05068).

On the penultimate ("pooled") vectors of a batch:

* distance-wise: pairwise Euclidean distances, each divided by the mean of the positive
  off-diagonal distances of its network (scale invariance), matched with the Huber loss;
* angle-wise: for every triplet (i, j, k) the cosine of the angle at i between the unit vectors
  e(i->j) and e(i->k), matched with the Huber loss (B^3 entries, i = j or i = k entries are 0)::

      L_RKD = w_d * huber(d_s / mu_s, d_t / mu_t) + w_a * huber(cos_s, cos_t)

Huber is ``smooth_l1`` with threshold 1, averaged over the entries. Term ``rkd`` = ``weight``
(beta 1) * L_RKD with w_d 25, w_a 50, plus ``ce``. Matches the paper (Eq. 6, 9) and the CRD
benchmark; teacher relations carry no gradient. The mean distance ignores the diagonal and is
floored at 1e-12, so a batch of identical vectors gives 0 instead of NaN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from softlabels.methods._feature_utils import SameFeature, ce_term, flat, float32_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class RKDParams(MethodParams):
    """CRD-benchmark defaults: beta 1, distance weight 25, angle weight 50."""

    weight: float = Field(1.0, ge=0, description="beta: multiplies the RKD loss")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")
    distance_weight: float = Field(25.0, ge=0, description="w_d: multiplies the distance-wise Huber loss")
    angle_weight: float = Field(50.0, ge=0, description="w_a: multiplies the angle-wise Huber loss")
    feature: str = Field("pooled", description="feature whose relations are matched")


@float32_loss
def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances (squared distances floored at ``eps``), zero diagonal."""
    e = flat(e)
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=d.dtype))


@float32_loss
def normalized_distances(e: torch.Tensor) -> torch.Tensor:
    """Pairwise distances divided by their mean over the positive off-diagonal entries."""
    d = pairwise_distances(e)
    pos = d > 0
    mean = (d * pos).sum() / pos.sum().clamp_min(1)
    return d / mean.clamp_min(1e-12)


@float32_loss
def triplet_angles(e: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B^3,) cosines <e(i->j), e(i->k)> of the unit difference vectors, float32."""
    e = flat(e)
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [i, j] = unit(e_j - e_i)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


@float32_loss
def rkd_distance_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t = normalized_distances(f_t)
    return F.smooth_l1_loss(normalized_distances(f_s), t)


@float32_loss
def rkd_angle_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t = triplet_angles(f_t)
    return F.smooth_l1_loss(triplet_angles(f_s), t)


@float32_loss
def rkd_loss(f_s: torch.Tensor, f_t: torch.Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0):
    """w_d * distance-wise + w_a * angle-wise RKD loss (float32 scalar)."""
    return distance_weight * rkd_distance_loss(f_s, f_t) + angle_weight * rkd_angle_loss(f_s, f_t)


@register_method("rkd")
class RKD(SameFeature, Distiller):
    """Loss terms: ``ce`` and ``rkd``."""

    Params = RKDParams

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        s, t = batch.student_features[p.feature], batch.teacher_features[p.feature]
        return {"ce": ce_term(batch, p.ce_weight),
                "rkd": p.weight * rkd_loss(s, t, p.distance_weight, p.angle_weight)}
