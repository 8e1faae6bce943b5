"""Variational information distillation, VID (Ahn et al., CVPR 2019, https://arxiv.org/abs/1904.05835).

For every paired stage, a regressor (1x1 conv -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv, no biases,
mid channels = teacher channels) predicts the mean of a Gaussian over the teacher's feature,
with a learned per-channel variance sigma^2 = softplus(alpha_c) + eps; the loss is the negative
log-likelihood without the constant, averaged over batch, channels and positions::

    L_VID = sum_stages mean( 0.5 * ( (t - mu(s))^2 / sigma^2 + log sigma^2 ) )

Term ``vid`` = ``weight`` (beta 1) * L_VID, plus ``ce``. alpha is initialised so that sigma^2
starts at ``init_var`` (5.0); eps 1e-5. Stages: every ``stageK`` output, last ``min(N_s, N_t)``
paired; when the spatial sizes differ the larger map is average-pooled to the smaller (the
benchmark's choice). Matches the CRD benchmark's ``VIDLoss``; the paper's constant
0.5 log(2 pi) is dropped (no effect on gradients).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from softlabels.methods._feature_utils import ce_term, float32_loss, match_spatial, paired_stages
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class VIDParams(MethodParams):
    """CRD-benchmark defaults: beta 1, initial variance 5.0, eps 1e-5."""

    weight: float = Field(1.0, ge=0, description="beta: multiplies the summed VID negative log-likelihood")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")
    init_var: float = Field(5.0, gt=0, description="initial predicted variance sigma^2")
    eps: float = Field(1e-5, gt=0, description="added to softplus(alpha) (variance floor)")

    @model_validator(mode="after")
    def _var_above_eps(self):
        if self.init_var <= self.eps:
            raise ValueError("init_var must exceed eps")
        return self


class VIDRegressor(nn.Module):
    """Predicts the Gaussian mean of a teacher map from a student map; holds the per-channel variance."""

    def __init__(self, s_channels: int, t_channels: int, mid_channels: int, init_var: float, eps: float) -> None:
        super().__init__()
        self.mean = nn.Sequential(
            nn.Conv2d(s_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, t_channels, 1, bias=False),
        )
        # softplus(alpha) + eps = init_var  <=>  alpha = log(exp(init_var - eps) - 1)
        self.alpha = nn.Parameter(torch.full((t_channels,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.alpha.float()) + self.eps

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Unweighted VID loss of one stage (float32 scalar)."""
        s, t = match_spatial(s, t.detach())
        return vid_nll(self.mean(s), t, self.variance())


@float32_loss
def vid_nll(mean: torch.Tensor, target: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """mean over all elements of 0.5 ((target - mean)^2 / var + log var); ``variance`` is per channel (C,)."""
    var = variance.float().view(1, -1, *([1] * (mean.dim() - 2)))
    return (0.5 * ((mean.float() - target.float()).pow(2) / var + torch.log(var))).mean()


@register_method("vid")
class VID(Distiller):
    """Loss terms: ``ce`` and ``vid``."""

    Params = VIDParams

    def _pairs(self) -> tuple[list[str], list[str]]:
        return paired_stages(self.student, self.teacher, "VID")

    def student_features(self) -> list[str]:
        return self._pairs()[0]

    def teacher_features(self) -> list[str]:
        return self._pairs()[1]

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        p = self.params
        s_feats, t_feats = self.sample_features(sample_images)
        regressors = nn.ModuleList()
        for s, t in zip(*self._pairs()):
            s_c, t_c = s_feats[s].shape[1], t_feats[t].shape[1]
            regressors.append(VIDRegressor(s_c, t_c, t_c, p.init_var, p.eps))
        self.auxiliary["regressors"] = regressors.to(sample_images.device)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        total = sum(
            reg(batch.student_features[s], batch.teacher_features[t])
            for (s, t), reg in zip(zip(*self._pairs()), self.auxiliary["regressors"])
        )
        return {"ce": ce_term(batch, p.ce_weight), "vid": p.weight * total}
