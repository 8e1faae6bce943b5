"""FitNets: hints for thin deep nets (Romero et al., ICLR 2015, https://arxiv.org/abs/1412.6550).

A regressor maps the student's "guided" feature to the shape of the teacher's "hint" feature and
the two are matched with the mean squared error (CRD benchmark / RepDistiller form)::

    L_FitNet = mean( (r(s_hint) - t_hint)^2 )          (mean over batch, channels and positions)

Term ``fitnet`` = ``weight`` (beta 100) * L_FitNet, plus ``ce`` (``ce_weight`` * CE). The hint is the
teacher's middle stage (``hint_layer``, default ``stage2``: RepDistiller's ``hint_layer = 2``, i.e.
the second stage output, for every architecture); the student's guided layer has the same name
unless ``student_layer`` is set. The regressor is :class:`~softlabels.methods._feature_utils.ConvReg`
(conv + BN + ReLU, as the benchmark's ``ConvReg`` with its default ``use_relu``).

Departure from the paper: the paper trains in two stages (hint pre-training of the lower layers,
then KD); the CRD benchmark and this implementation add the hint loss to CE in one stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from softlabels.methods._feature_utils import ConvReg, ce_term, float32_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class FitNetParams(MethodParams):
    """CRD-benchmark defaults (resnet32x4 -> resnet8x4): beta 100, hint = the teacher's stage2."""

    weight: float = Field(100.0, ge=0, description="beta: multiplies the hint MSE")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label cross-entropy")
    hint_layer: str = Field("stage2", description="teacher feature used as the hint")
    student_layer: str | None = Field(None, description="student feature regressed onto the hint (default: hint_layer)")
    regressor_relu: bool = Field(True, description="ReLU after the regressor's BN (RepDistiller's ConvReg default)")


@float32_loss
def hint_loss(regressed: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the regressed student feature and the (detached) hint, float32."""
    return F.mse_loss(regressed.float(), hint.detach().float())


@register_method("fitnet")
class FitNet(Distiller):
    """Loss terms: ``ce`` and ``fitnet`` (weighted hint MSE)."""

    Params = FitNetParams

    def student_features(self) -> list[str]:
        return [self.params.student_layer or self.params.hint_layer]

    def teacher_features(self) -> list[str]:
        return [self.params.hint_layer]

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        s_feats, t_feats = self.sample_features(sample_images)
        s_shape = s_feats[self.student_features()[0]].shape
        t_shape = t_feats[self.teacher_features()[0]].shape
        self.auxiliary["regressor"] = ConvReg(s_shape, t_shape, relu=self.params.regressor_relu).to(sample_images.device)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        s = self.auxiliary["regressor"](batch.student_features[self.student_features()[0]])
        t = batch.teacher_features[p.hint_layer]
        return {"ce": ce_term(batch, p.ce_weight), "fitnet": p.weight * hint_loss(s, t)}
