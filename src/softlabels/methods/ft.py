"""Factor Transfer, FT (Kim et al., NeurIPS 2018, https://arxiv.org/abs/1802.04977).

A *paraphraser* (convolutional autoencoder, bottleneck ``rate`` k = 0.5 of the teacher's channels)
is trained on the teacher's last-stage map to reconstruct it; its encoder output is the teacher's
"factor". A *translator* (three conv-BN-LeakyReLU layers) maps the student's last-stage map to a
factor of the same size. Two phases:

* init phase (``epochs < init_epochs``, default 30): only the paraphraser trains, on the
  reconstruction MSE (term ``ft_rec``); the student gets no gradient.
* main phase: CE + ``weight`` (beta 200) * factor loss (term ``ft``); the paraphraser is frozen
  (eval mode, no gradient), the translator trains with the student.

Factor loss: the larger map is average-pooled to the smaller size, each factor is reduced to a
vector and L2-normalised, and the loss is the mean absolute difference (``p`` 1; ``p`` 2 gives the
mean squared difference). ``factor_form: attention`` (default, the CRD benchmark's form, for which
beta 200 was tuned) reduces a factor to the channel mean of its square (N, H*W); ``flatten`` (the
FT paper and its official code) uses the whole factor (N, C*H*W).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from softlabels.errors import ConfigError
from softlabels.features import stage_names
from softlabels.losses import kd_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class FTParams(MethodParams):
    """CRD-benchmark defaults (resnet32x4 -> resnet8x4): beta 200, k 0.5, 30 init epochs, CE 1, no KD."""

    init_epochs: int = Field(30, ge=0, description="epochs of paraphraser pre-training (at the base LR)")
    weight: float = Field(200.0, ge=0, description="beta: multiplies the factor loss (main phase)")
    rate: float = Field(0.5, gt=0, le=4, description="paraphraser rate k: factor channels = k * teacher channels")
    p: Literal[1, 2] = Field(1, description="1: mean absolute, 2: mean squared difference of normalised factors")
    factor_form: Literal["attention", "flatten"] = Field(
        "attention", description="attention: channel mean of factor^2 (CRD benchmark); flatten: whole factor (paper)"
    )
    paraphraser_bn: bool = Field(False, description="BN in the paraphraser (RepDistiller: off)")
    translator_bn: bool = Field(True, description="BN in the translator (RepDistiller: on)")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label CE (main phase)")
    kd_weight: float = Field(0.0, ge=0, description="multiplies T^2 * KL(teacher || student) (main phase; 0 = off)")
    temperature: float = Field(4.0, gt=0, description="KD temperature (used when kd_weight > 0)")


def _conv_stack(channels: list[int], bn: bool, transpose: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers.append(conv(c_in, c_out, 3, 1, 1))
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Autoencoder on (N, C, H, W): encoder C -> C -> kC -> kC (the factor), decoder back to C."""

    def __init__(self, channels: int, rate: float = 0.5, bn: bool = False) -> None:
        super().__init__()
        mid = max(1, int(channels * rate))
        self.encoder = _conv_stack([channels, channels, mid, mid], bn)
        self.decoder = _conv_stack([mid, mid, channels, channels], bn, transpose=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(factor (N, kC, H, W), reconstruction (N, C, H, W))."""
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Student map (N, Cs, H, W) -> factor (N, k*Ct, H, W): three conv(-BN)-LeakyReLU layers."""

    def __init__(self, s_channels: int, t_channels: int, rate: float = 0.5, bn: bool = True) -> None:
        super().__init__()
        mid = max(1, int(t_channels * rate))
        self.encoder = _conv_stack([s_channels, s_channels, mid, mid], bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def factor_transfer_loss(
    factor_s: torch.Tensor, factor_t: torch.Tensor, p: int = 1, form: str = "attention"
) -> torch.Tensor:
    """Distance between L2-normalised student and teacher factors (N, C, H, W); float32 scalar."""
    fs, ft = factor_s.float(), factor_t.float()
    if fs.shape[-2:] != ft.shape[-2:]:
        if fs.shape[-2] * fs.shape[-1] > ft.shape[-2] * ft.shape[-1]:
            fs = F.adaptive_avg_pool2d(fs, ft.shape[-2:])
        else:
            ft = F.adaptive_avg_pool2d(ft, fs.shape[-2:])

    def vec(f: torch.Tensor) -> torch.Tensor:
        v = f.pow(2).mean(1) if form == "attention" else f
        return F.normalize(v.reshape(f.shape[0], -1), dim=1)

    diff = vec(fs) - vec(ft)
    return diff.abs().mean() if p == 1 else diff.pow(2).mean()


@register_method("ft")
class FT(Distiller):
    """Loss terms: ``ft_rec`` during the init phase; ``ce``, ``ft`` (and ``kd`` if ``kd_weight`` > 0) afterwards."""

    Params = FTParams

    def _last_stage(self, model: nn.Module) -> list[str]:
        stages = stage_names(model)
        if not stages:
            raise ConfigError(f"FT needs stage features; {type(model).__name__} declares none")
        return [stages[-1]]

    def student_features(self) -> list[str]:
        return self._last_stage(self.student)

    def teacher_features(self) -> list[str]:
        return self._last_stage(self.teacher)

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        p = self.params
        s_feats, t_feats = self.sample_features(sample_images)
        s_c = s_feats[self.student_features()[0]].shape[1]
        t_c = t_feats[self.teacher_features()[0]].shape[1]
        self.auxiliary["paraphraser"] = Paraphraser(t_c, p.rate, p.paraphraser_bn).to(sample_images.device)
        self.auxiliary["translator"] = Translator(s_c, t_c, p.rate, p.translator_bn).to(sample_images.device)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        paraphraser = self.auxiliary["paraphraser"]
        t = batch.teacher_features[self.teacher_features()[0]].detach().float()
        if batch.epoch < self.init_epochs:
            paraphraser.train(self.training)
            _, rec = paraphraser(t)
            return {"ft_rec": F.mse_loss(rec.float(), t)}
        paraphraser.eval()  # frozen after its pre-training: no gradient, no BN statistics update
        with torch.no_grad():
            factor_t = paraphraser.encoder(t)
        factor_s = self.auxiliary["translator"](batch.student_features[self.student_features()[0]])
        terms = {
            "ce": p.ce_weight * F.cross_entropy(batch.student_logits.float(), batch.targets),
            "ft": p.weight * factor_transfer_loss(factor_s, factor_t, p.p, p.factor_form),
        }
        if p.kd_weight > 0:
            terms["kd"] = p.kd_weight * kd_loss(batch.student_logits, batch.teacher_logits, p.temperature)
        return terms
