"""Probabilistic knowledge transfer, PKT (Passalis & Tefas, ECCV 2018, https://arxiv.org/abs/1803.10837).

On the penultimate ("pooled") vectors, L2-normalised, the cosine-similarity kernel
K(a, b) = (cos(a, b) + 1) / 2 gives each sample's conditional distribution over the batch
(each row of K divided by its sum, the diagonal included); the loss is the KL divergence from the
teacher's conditionals to the student's, averaged over the B^2 entries::

    P_ij = K_ij / sum_j K_ij,     L_PKT = mean_ij  P^t_ij * log( (P^t_ij + eps) / (P^s_ij + eps) )

Term ``pkt`` = ``weight`` (beta 30000) * L_PKT, plus ``ce``. eps 1e-7 in the normalisation and the
log, as the authors' code and the CRD benchmark (a *mean* over B^2 entries, not a per-sample sum).
"""
from __future__ import annotations

import torch
from pydantic import Field

from softlabels.methods._feature_utils import SameFeature, ce_term, flat, float32_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method

PKT_EPS = 1e-7


class PKTParams(MethodParams):
    """CRD-benchmark defaults: beta 30000 on the pooled features."""

    weight: float = Field(30000.0, ge=0, description="beta: multiplies the PKT loss")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")
    feature: str = Field("pooled", description="feature whose similarity distributions are matched")


@float32_loss
def conditional_probabilities(f: torch.Tensor, eps: float = PKT_EPS) -> torch.Tensor:
    """(B, ...) -> (B, B) rows of the cosine kernel (cos + 1) / 2, each normalised to sum 1."""
    x = flat(f)
    x = x / (x.norm(dim=1, keepdim=True) + eps)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


@float32_loss
def pkt_loss(f_s: torch.Tensor, f_t: torch.Tensor, eps: float = PKT_EPS) -> torch.Tensor:
    """Mean over the B^2 entries of P_t log((P_t + eps) / (P_s + eps)), float32."""
    p_s = conditional_probabilities(f_s, eps)
    p_t = conditional_probabilities(f_t.detach(), eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@register_method("pkt")
class PKT(SameFeature, Distiller):
    """Loss terms: ``ce`` and ``pkt``."""

    Params = PKTParams

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        s, t = batch.student_features[p.feature], batch.teacher_features[p.feature]
        return {"ce": ce_term(batch, p.ce_weight), "pkt": p.weight * pkt_loss(s, t)}
