"""Overhaul of Feature Distillation, OFD (Heo et al., ICCV 2019, https://arxiv.org/abs/1904.01866).

Distils the pre-ReLU feature of every stage (``stageK_pre_relu``). The teacher's feature passes a
*margin ReLU* ``max(t, m)``, with a per-channel margin m from the statistics of the BatchNorm
that produces it; the student's passes a connector (1x1 conv + BN, ``connector_kernel``); the
*partial L2* distance skips positions where the student is already below a negative target::

    d(s, t) = (s - m)^2   where s > m and t <= m
            = (s - t)^2   where s > t and m < t <= 0
            = (s - t)^2   where t > 0          (0 elsewhere), summed over C, H, W, divided by B
    L_OFD   = sum_i d(C_i(s_i), t_i) / 2^(N - i - 1)        (i = 0..N-1: the last stage weighs 1)

Term ``ofd`` = ``weight`` (1e-3) * L_OFD, plus ``ce`` (and ``kd`` if ``kd_weight`` > 0).

Margin: with the BN's weight gamma and bias beta per channel, m = E[x | x < 0] for
x ~ N(beta, |gamma|^2), i.e. ``beta - |gamma| phi(beta/|gamma|) / Phi(-beta/|gamma|)``, or
``-3 |gamma|`` when the negative mass ``Phi(-beta/|gamma|)`` is < 0.001 (the official code). The
BN is found from the model's feature map: the pre-ReLU module itself when it is a BatchNorm (WRN,
MobileNetV1), the last module of a Sequential ending in one (VGG), or, for an identity ``preact``
hook inside a residual block, the block's last directly-owned BatchNorm (``bn2`` of a BasicBlock,
``bn3`` of a Bottleneck / ShuffleNetV1 unit; the shortcut's BN is ignored, as in the official
``get_bn_before_relu``). When no such BN with the right channel count exists, the margin is
*estimated* from the sampled teacher features of :meth:`setup`: per channel the mean of the
negative values, or -3 x the channel's standard deviation when fewer than 0.1 % are negative.
``margin_sources`` records which way each stage's margin was obtained.

The teacher must declare pre-ReLU features (ConfigError otherwise). A student without them
(MobileNetV2, ShuffleV2) falls back to its post-ReLU stage outputs, with a warning. When the
spatial sizes differ the teacher feature is average-pooled to the student's (mdistiller); when the
numbers of stages differ the last ``min(N_s, N_t)`` stages are paired. The teacher stays in eval
mode (the official CIFAR script runs it in train mode; ``teacher.train_mode: true`` does that).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from softlabels.errors import ConfigError
from softlabels.features import stage_names
from softlabels.losses import kd_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class MarginReLUParams(MethodParams):
    """The margin-ReLU feature loss's weights and connector (shared by OFD and DFA's distillation stage)."""

    weight: float = Field(1e-3, ge=0, description="multiplies the (stage-weighted) partial-L2 loss")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label CE")
    connector_kernel: int = Field(1, ge=1, description="kernel size of the connector conv (odd)")

    @field_validator("connector_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("connector_kernel must be odd")
        return v


class OFDParams(MarginReLUParams):
    """mdistiller CIFAR defaults: CE 1, feature weight 1e-3 (the official 1/1000), 1x1 connector."""

    kd_weight: float = Field(0.0, ge=0, description="multiplies T^2 * KL(teacher || student) (0 = off)")
    temperature: float = Field(4.0, gt=0, description="KD temperature (used when kd_weight > 0)")


def partial_l2(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """OFD's partial L2 (summed over all elements, float32): target through max(t, m), s below it skipped.

    Args:
        source: connector output (N, C, H, W) (any shape broadcastable with ``margin``).
        target: teacher pre-ReLU feature, same shape.
        margin: per-channel margin, e.g. (1, C, 1, 1).
    """
    s, t = source.float(), target.float()
    clipped = torch.maximum(t, margin.float())
    mask = (s > clipped) | (t > 0)
    return ((s - clipped).pow(2) * mask.float()).sum()


def bn_margin(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-channel margin E[x | x < 0], x ~ N(bias, |weight|^2); -3|weight| where P(x < 0) < 0.001."""
    std = weight.detach().float().abs().clamp_min(1e-12)
    mean = bias.detach().float()
    neg_mass = torch.special.ndtr(-mean / std)
    pdf = torch.exp(-0.5 * (mean / std) ** 2) / math.sqrt(2 * math.pi)
    expected = mean - std * pdf / neg_mass.clamp_min(1e-30)
    return torch.where(neg_mass > 0.001, expected, -3 * std)


def feature_margin(feature: torch.Tensor) -> torch.Tensor:
    """Per-channel margin estimated from a feature sample (N, C, H, W): mean of the negative values,
    or -3 std where fewer than 0.1 % of the values are negative."""
    x = feature.detach().float().transpose(0, 1).reshape(feature.shape[1], -1)
    neg = x.clamp(max=0)
    count = (x < 0).sum(1)
    frac = count.float() / x.shape[1]
    mean_neg = neg.sum(1) / count.clamp_min(1)
    return torch.where(frac >= 0.001, mean_neg, -3 * x.std(1, unbiased=False))


def bn_before_relu(model: nn.Module, feature: str) -> nn.BatchNorm2d | None:
    """The BatchNorm2d whose output (plus, in residual blocks, the shortcut) is ``feature``, or None."""
    path = getattr(model, "feature_layers", {}).get(feature)
    if path is None:
        return None
    module = model.get_submodule(path)
    if isinstance(module, nn.BatchNorm2d):
        return module
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.BatchNorm2d):
        return module[-1]
    if isinstance(module, nn.Identity) and "." in path:
        parent = model.get_submodule(path.rsplit(".", 1)[0])
        bns = [m for m in parent.children() if isinstance(m, nn.BatchNorm2d)]
        return bns[-1] if bns else None
    return None


class Margins(nn.Module):
    """Holds one (1, C, 1, 1) margin buffer per distilled stage (checkpointed with the auxiliary modules)."""

    def __init__(self, margins: list[torch.Tensor]) -> None:
        super().__init__()
        for i, m in enumerate(margins):
            self.register_buffer(f"margin{i}", m.view(1, -1, 1, 1).clone())

    def __getitem__(self, i: int) -> torch.Tensor:
        return getattr(self, f"margin{i}")


def _connector(s_channels: int, t_channels: int, kernel: int) -> nn.Sequential:
    conv = nn.Conv2d(s_channels, t_channels, kernel, padding=(kernel - 1) // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel * kernel * t_channels)))
    bn = nn.BatchNorm2d(t_channels)
    return nn.Sequential(conv, bn)


@register_method("ofd")
class OFD(Distiller):
    """Loss terms: ``ce``, ``ofd`` (and ``kd`` when ``kd_weight`` > 0)."""

    Params = OFDParams

    def _pairs(self) -> tuple[list[str], list[str]]:
        t_stages = stage_names(self.teacher)
        t_layers = getattr(self.teacher, "feature_layers", {})
        t_names = [f"{s}_pre_relu" for s in t_stages]
        if not t_stages or any(n not in t_layers for n in t_names):
            raise ConfigError(
                f"OFD needs the teacher's pre-ReLU stage features, but {type(self.teacher).__name__} does not declare "
                f"them (its features: {', '.join(t_layers) or 'none'})"
            )
        s_stages = stage_names(self.student)
        if not s_stages:
            raise ConfigError(f"OFD needs stage features; {type(self.student).__name__} declares none")
        s_layers = getattr(self.student, "feature_layers", {})
        s_names = [f"{s}_pre_relu" for s in s_stages]
        if any(n not in s_layers for n in s_names):
            s_names = s_stages
        n = min(len(s_names), len(t_names))
        return s_names[-n:], t_names[-n:]

    def student_features(self) -> list[str]:
        return self._pairs()[0]

    def teacher_features(self) -> list[str]:
        return self._pairs()[1]

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        s_names, t_names = self._pairs()
        if not s_names[0].endswith("_pre_relu"):
            warnings.warn(
                f"OFD: student {type(self.student).__name__} has no pre-ReLU features; distilling its post-ReLU "
                "stage outputs instead", stacklevel=2,
            )
        s_feats, t_feats = self.sample_features(sample_images)
        connectors, margins, self.margin_sources = nn.ModuleList(), [], []
        for s_name, t_name in zip(s_names, t_names):
            t = t_feats[t_name]
            connectors.append(_connector(s_feats[s_name].shape[1], t.shape[1], self.params.connector_kernel))
            bn = bn_before_relu(self.teacher, t_name)
            if bn is not None and bn.num_features == t.shape[1] and bn.affine:
                margins.append(bn_margin(bn.weight, bn.bias))
                self.margin_sources.append("bn")
            else:
                margins.append(feature_margin(t))
                self.margin_sources.append("features")
        self.auxiliary["connectors"] = connectors.to(sample_images.device)
        self.auxiliary["margins"] = Margins(margins).to(sample_images.device)

    def ofd_loss(self, batch: Batch) -> torch.Tensor:
        """Unweighted OFD loss: stage-weighted partial L2 divided by the batch size."""
        s_names, t_names = self._pairs()
        n, bsz = len(s_names), batch.student_logits.shape[0]
        total = batch.student_logits.new_zeros((), dtype=torch.float32)
        for i, (s_name, t_name) in enumerate(zip(s_names, t_names)):
            s = self.auxiliary["connectors"][i](batch.student_features[s_name])
            t = batch.teacher_features[t_name].detach()
            if t.shape[-2:] != s.shape[-2:]:
                t = F.adaptive_avg_pool2d(t, s.shape[-2:])
            total = total + partial_l2(s, t, self.auxiliary["margins"][i]) / bsz / 2 ** (n - i - 1)
        return total

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        terms = {
            "ce": p.ce_weight * F.cross_entropy(batch.student_logits.float(), batch.targets),
            "ofd": p.weight * self.ofd_loss(batch),
        }
        if p.kd_weight > 0:
            terms["kd"] = p.kd_weight * kd_loss(batch.student_logits, batch.teacher_logits, p.temperature)
        return terms
