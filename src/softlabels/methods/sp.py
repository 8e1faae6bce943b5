"""Similarity-preserving KD, SP (Tung & Mori, ICCV 2019, https://arxiv.org/abs/1907.09682).

The last stage map of each network, flattened to (B, D), gives a B x B similarity (Gram) matrix
whose rows are L2-normalised; the loss is the squared Frobenius distance divided by B^2::

    G   = row_normalize( F F^T ),   F = feature.view(B, -1)
    L_SP = || G_t - G_s ||_F^2 / B^2

Term ``sp`` = ``weight`` (beta 3000) * L_SP, plus ``ce``. Student and teacher may have any channel
counts and map sizes (only the B x B matrices are compared). Matches the paper (Eq. 4, one
layer pair: the last stage) and the CRD benchmark.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from softlabels.methods._feature_utils import ce_term, flat, float32_loss, paired_stages
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class SPParams(MethodParams):
    """CRD-benchmark defaults (resnet32x4 -> resnet8x4): beta 3000 on the last stage."""

    weight: float = Field(3000.0, ge=0, description="beta: multiplies the similarity-preserving loss")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")


@float32_loss
def similarity_matrix(f: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, B): the row-L2-normalised Gram matrix of the flattened feature, float32."""
    x = flat(f)
    return F.normalize(x @ x.t(), dim=1)


@float32_loss
def sp_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of the normalised similarity matrices over B^2."""
    bsz = f_s.shape[0]
    diff = similarity_matrix(f_t.detach()) - similarity_matrix(f_s)
    return diff.pow(2).sum() / (bsz * bsz)


@register_method("sp")
class SP(Distiller):
    """Loss terms: ``ce`` and ``sp``."""

    Params = SPParams

    def student_features(self) -> list[str]:
        return paired_stages(self.student, self.teacher, "SP")[0][-1:]

    def teacher_features(self) -> list[str]:
        return paired_stages(self.student, self.teacher, "SP")[1][-1:]

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        s = batch.student_features[self.student_features()[0]]
        t = batch.teacher_features[self.teacher_features()[0]]
        return {"ce": ce_term(batch, p.ce_weight), "sp": p.weight * sp_loss(s, t)}
