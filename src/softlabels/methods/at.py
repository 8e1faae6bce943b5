"""Attention transfer, AT (Zagoruyko & Komodakis, ICLR 2017, https://arxiv.org/abs/1612.03928).

The spatial attention map of a stage output f (B, C, H, W) is the channel mean of |f|^p (p = 2),
flattened and L2-normalised per sample. Per stage, the loss is the mean (over batch and positions)
of the squared difference of the student's and teacher's maps; the stages are **summed**::

    Q(f)  = normalize( mean_c |f_c|^p ).flatten
    L_AT  = sum_stages mean( (Q(s_i) - Q(t_i))^2 )

Term ``at`` = ``weight`` (beta 1000) * L_AT, plus ``ce``. Stages: every ``stageK`` output (post-ReLU,
without the stem and the pooled vector), the last ``min(N_s, N_t)`` of each model paired; when
the spatial sizes differ, the larger map is average-pooled to the smaller.

Weight convention (checked against the code): RepDistiller (and mdistiller) sum the per-stage
``.pow(2).mean()`` over stages and multiply by beta = 1000; the stored versions of the official
attention-transfer ``cifar.py`` that we could read do the same (``beta * sum(loss_groups)``), while
the paper (our reading) writes beta/2 with beta = 1000 divided by (map size x batch size), i.e. the
``.mean()``. So our 1000 matches the benchmark; a *mean* over stages instead of the sum would be
1/N_stages of it (1/3 for CIFAR ResNets), and the paper's beta/2 form half of it. The paper's |f|^p is used (RepDistiller's ``f.pow(p)``
is the same for even p).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from softlabels.methods._feature_utils import StagePairs, ce_term, float32_loss, match_spatial
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class ATParams(MethodParams):
    """CRD-benchmark defaults (resnet32x4 -> resnet8x4): beta 1000, p 2."""

    weight: float = Field(1000.0, ge=0, description="beta: multiplies the sum over stages of the AT loss")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")
    p: float = Field(2.0, gt=0, description="exponent of the activation map")


@float32_loss
def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W): L2-normalised channel mean of |f|^p, float32."""
    a = f.float().abs().pow(p).mean(1)
    return F.normalize(a.reshape(a.shape[0], -1), dim=1)


@float32_loss
def at_loss(f_s: torch.Tensor, f_t: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """One stage: mean squared difference of the attention maps (larger map pooled to the smaller)."""
    f_s, f_t = match_spatial(f_s, f_t.detach())
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


@register_method("at")
class AT(StagePairs, Distiller):
    """Loss terms: ``ce`` and ``at`` (weighted sum over stages)."""

    Params = ATParams

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        s_names, t_names = self._pairs()
        total = sum(
            at_loss(batch.student_features[s], batch.teacher_features[t], p.p) for s, t in zip(s_names, t_names)
        )
        return {"ce": ce_term(batch, p.ce_weight), "at": p.weight * total}
