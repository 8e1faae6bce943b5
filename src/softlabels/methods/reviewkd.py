"""ReviewKD: knowledge review (Chen et al., CVPR 2021, https://arxiv.org/abs/2104.09044).

Student features ``[stage1, ..., stageN, pooled]`` (the pooled vector as a 1x1 map) are fused
top-down by attention-based fusion (ABF): level i maps its student feature to ``mid`` channels
(1x1 conv + BN), fuses it with the (nearest-upsampled) fused map of the deeper level through two
per-pixel sigmoid attention weights, resizes to the teacher's spatial size and outputs a 3x3
conv + BN with the teacher's channel count. Each output is compared with the teacher's feature of
the same level (``stageK_pre_relu`` when the teacher declares it, as in the official code, else
``stageK``; then ``pooled``) by the hierarchical context loss (HCL)::

    hcl(f_s, f_t) = [ mse(f_s, f_t) + sum_{l in 4,2,1; l < H} 2^-j mse(pool_l f_s, pool_l f_t) ] / (1 + sum 2^-j)

(j = 1, 2, 3 over the levels that are used). Term ``reviewkd`` = ``weight`` (5.0: the CIFAR-100
value of mdistiller's ``configs/cifar100/reviewkd.yaml`` and of ReviewKD's own CIFAR script; only
mdistiller's config fallback is 1) * warm-up * sum of HCL over levels, with warm-up ``min((epoch + 1) / warmup_epochs, 1)`` (20 epochs; mdistiller's
1-based count, the official CIFAR script uses ``epoch / 20`` from epoch 0); plus ``ce`` and,
optionally, ``kd``.

``mid`` = ``min(max_mid_channel, student pooled channels)`` as in both reference codes (512 caps
wide students such as ShuffleV1). When student and teacher have different numbers of stages, the
last ``min(N_s, N_t)`` stages are paired.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from softlabels.errors import ConfigError
from softlabels.features import stage_names
from softlabels.losses import kd_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method


class ReviewKDParams(MethodParams):
    """Reference CIFAR-100 defaults: CE 1, ReviewKD 5, 20-epoch warm-up, max mid channel 512."""

    weight: float = Field(5.0, ge=0, description="multiplies the summed HCL loss (5: the reference CIFAR value)")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label CE")
    warmup_epochs: int = Field(20, ge=0, description="linear warm-up of the ReviewKD weight (0: none)")
    max_mid_channel: int = Field(512, ge=1, description="cap of the ABF fusion width")
    student_preact: bool = Field(False, description="fuse the student's pre-ReLU stage features (mdistiller option)")
    kd_weight: float = Field(0.0, ge=0, description="multiplies T^2 * KL(teacher || student) (0 = off)")
    temperature: float = Field(4.0, gt=0, description="KD temperature (used when kd_weight > 0)")


def hcl_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], levels: tuple[int, ...] = (4, 2, 1)):
    """Hierarchical context loss summed over feature pairs (N, C, H, W) of equal shapes; float32 scalar."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for fs, ft in zip(student, teacher):
        fs, ft = fs.float(), ft.float()
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft)
        cnt, tot = 1.0, 1.0
        for level in levels:
            if level >= h:
                continue
            cnt /= 2.0
            loss = loss + cnt * F.mse_loss(F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level))
            tot += cnt
        total = total + loss / tot
    return total


class ABF(nn.Module):
    """Attention-based fusion of one level: (x (N, Cin, h, w), residual) -> (output (N, Cout, H, W), fused)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, out_size: tuple[int, int]):
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, x.shape[-2:], mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, :1] + residual * z[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x


def _as_map(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 4 else x.reshape(x.shape[0], -1, 1, 1)


@register_method("reviewkd")
class ReviewKD(Distiller):
    """Loss terms: ``ce``, ``reviewkd`` (and ``kd`` when ``kd_weight`` > 0)."""

    Params = ReviewKDParams

    def _stages(self, model: nn.Module, preact: bool, required: bool) -> list[str]:
        stages = stage_names(model)
        if not stages:
            raise ConfigError(f"ReviewKD needs stage features; {type(model).__name__} declares none")
        layers = getattr(model, "feature_layers", {})
        pre = [f"{s}_pre_relu" for s in stages]
        if preact and all(n in layers for n in pre):
            return pre
        if preact and required:
            raise ConfigError(f"ReviewKD student_preact: {type(model).__name__} declares no pre-ReLU stage features")
        return stages

    def _pairs(self) -> tuple[list[str], list[str]]:
        s = self._stages(self.student, self.params.student_preact, required=True)
        t = self._stages(self.teacher, True, required=False)
        n = min(len(s), len(t))
        return [*s[-n:], "pooled"], [*t[-n:], "pooled"]

    def student_features(self) -> list[str]:
        return self._pairs()[0]

    def teacher_features(self) -> list[str]:
        return self._pairs()[1]

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        s_feats, t_feats = self.sample_features(sample_images)
        s_names, t_names = self._pairs()
        s_maps = [_as_map(s_feats[n]) for n in s_names]
        t_maps = [_as_map(t_feats[n]) for n in t_names]
        mid = min(self.params.max_mid_channel, s_maps[-1].shape[1])
        deepest = len(s_maps) - 1
        # abfs[0] handles the deepest level (pooled, no fusion), abfs[-1] the shallowest stage
        abfs = [ABF(s_maps[i].shape[1], mid, t_maps[i].shape[1], fuse=i < deepest) for i in range(deepest, -1, -1)]
        self.auxiliary["abfs"] = nn.ModuleList(abfs).to(sample_images.device)
        self.out_sizes = [tuple(t.shape[-2:]) for t in t_maps]

    def fused_features(self, batch: Batch) -> list[torch.Tensor]:
        """ABF outputs, shallowest level first, each shaped like the teacher feature of its level."""
        s_names, _ = self._pairs()
        x = [_as_map(batch.student_features[n]) for n in s_names][::-1]
        sizes = self.out_sizes[::-1]
        results, residual = [], None
        for feat, abf, size in zip(x, self.auxiliary["abfs"], sizes):
            out, residual = abf(feat, residual, size)
            results.insert(0, out)
        return results

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        _, t_names = self._pairs()
        teacher = [_as_map(batch.teacher_features[n].detach()) for n in t_names]
        warm = 1.0 if p.warmup_epochs == 0 else min((batch.epoch - self.init_epochs + 1) / p.warmup_epochs, 1.0)
        terms = {
            "ce": p.ce_weight * F.cross_entropy(batch.student_logits.float(), batch.targets),
            "reviewkd": p.weight * warm * hcl_loss(self.fused_features(batch), teacher),
        }
        if p.kd_weight > 0:
            terms["kd"] = p.kd_weight * kd_loss(batch.student_logits, batch.teacher_logits, p.temperature)
        return terms
