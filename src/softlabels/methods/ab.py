"""Activation-boundary distillation, AB (Heo et al., AAAI 2019, https://arxiv.org/abs/1811.03233).

The student learns *whether* each of the teacher's hidden neurons fires: its pre-ReLU stage
features, mapped to the teacher's shape by a connector, are pushed to the teacher's side of the
activation boundary with a hinge-like margin loss (CRD benchmark / RepDistiller form)::

    l(s, t) = sum[ (s + mu)^2 * 1(s > -mu, t <= 0) + (s - mu)^2 * 1(s <= mu, t > 0) ]
    L_AB    = sum_i 2^(i - N + 1) * l(C_i(s_i), t_i) / B * 3 / 1000       (i = 0..N-1, last stage weight 1)

with s_i / t_i the student's / teacher's ``stage{i}_pre_relu`` features, mu the margin (1.0),
B the batch size and C_i the connector (identity when shapes already match, else a conv + BN
regressor). As in the benchmark, **AB is applied only in the initialisation phase**
(``init_epochs``, default 30; the term ``ab``); the main phase is CE (+ KD when ``kd_weight`` > 0).

Models without pre-ReLU features (in this zoo MobileNetV2 and ShuffleV2, whose stage outputs are
not followed by a ReLU the way ResNet's are) cannot be used: constructing the method raises a
:class:`~softlabels.errors.ConfigError` naming the model. When student and teacher have different
numbers of stages the last ``min(N_s, N_t)`` stages are paired.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from softlabels.errors import ConfigError
from softlabels.features import stage_names
from softlabels.losses import kd_loss
from softlabels.methods._feature_utils import ConvReg
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class ABParams(MethodParams):
    """CRD-benchmark defaults (resnet32x4 -> resnet8x4): beta 1, margin 1, 30 init epochs, CE 1, no KD."""

    init_epochs: int = Field(30, ge=0, description="epochs of the AB-only initialisation phase (at the base LR)")
    weight: float = Field(1.0, ge=0, description="beta: multiplies the AB margin loss (init phase only)")
    margin: float = Field(1.0, gt=0, description="mu of the margin loss")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label CE (main phase)")
    kd_weight: float = Field(0.0, ge=0, description="multiplies T^2 * KL(teacher || student) (main phase; 0 = off)")
    temperature: float = Field(4.0, gt=0, description="KD temperature (used when kd_weight > 0)")


def ab_margin_loss(source: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Activation-boundary margin loss, summed over every element (float32 scalar).

    Args:
        source: connector-mapped student pre-activations, any shape.
        target: teacher pre-activations, same shape (detached by the caller).
        margin: mu > 0.
    """
    s, t = source.float(), target.float()
    off = (s + margin).pow(2) * ((s > -margin) & (t <= 0)).float()
    on = (s - margin).pow(2) * ((s <= margin) & (t > 0)).float()
    return (off + on).sum()


def pre_relu_names(model: nn.Module, method: str, role: str) -> list[str]:
    """``["stage1_pre_relu", ...]`` of ``model``; ConfigError naming the model when it declares none."""
    stages = stage_names(model)
    layers = getattr(model, "feature_layers", {})
    names = [f"{s}_pre_relu" for s in stages]
    missing = [n for n in names if n not in layers]
    if not stages or missing:
        raise ConfigError(
            f"{method} needs pre-ReLU stage features, but the {role} {type(model).__name__} does not declare "
            f"{', '.join(missing) or 'any stage'} (its features: {', '.join(layers) or 'none'}); models whose "
            f"stages do not end in a ReLU (MobileNetV2, ShuffleV2) cannot be used with {method}"
        )
    return names


@register_method("ab")
class AB(Distiller):
    """Loss terms: ``ab`` during the init phase; ``ce`` (and ``kd`` when ``kd_weight`` > 0) afterwards."""

    Params = ABParams

    def student_features(self) -> list[str]:
        return pre_relu_names(self.student, "AB", "student")

    def teacher_features(self) -> list[str]:
        return pre_relu_names(self.teacher, "AB", "teacher")

    def _pairs(self) -> list[tuple[str, str]]:
        s, t = self.student_features(), self.teacher_features()
        n = min(len(s), len(t))
        return list(zip(s[-n:], t[-n:]))

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        s_feats, t_feats = self.sample_features(sample_images)
        connectors = nn.ModuleList()
        for s_name, t_name in self._pairs():
            s_shape, t_shape = s_feats[s_name].shape, t_feats[t_name].shape
            same = s_shape[1:] == t_shape[1:]
            connectors.append(nn.Identity() if same else ConvReg(s_shape, t_shape, relu=False))
        self.auxiliary["connectors"] = connectors.to(sample_images.device)

    def ab_loss(self, batch: Batch) -> torch.Tensor:
        """Unweighted (beta = 1) AB loss of the batch, summed over the paired stages."""
        pairs = self._pairs()
        n, bsz = len(pairs), batch.student_logits.shape[0]
        total = batch.student_logits.new_zeros((), dtype=torch.float32)
        for i, ((s_name, t_name), conn) in enumerate(zip(pairs, self.auxiliary["connectors"])):
            s = conn(batch.student_features[s_name])
            t = batch.teacher_features[t_name].detach()
            total = total + 2.0 ** (i - n + 1) * ab_margin_loss(s, t, self.params.margin) / bsz * 3 / 1000
        return total

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        if batch.epoch < self.init_epochs:
            return {"ab": p.weight * self.ab_loss(batch)}
        terms = {"ce": p.ce_weight * F.cross_entropy(batch.student_logits.float(), batch.targets)}
        if p.kd_weight > 0:
            terms["kd"] = p.kd_weight * kd_loss(batch.student_logits, batch.teacher_logits, p.temperature)
        return terms
