"""Common corruptions (in the spirit of CIFAR-10-C / ImageNet-C) applied on the fly to image batches.

Every corruption takes a batch of images in [0, 1] (batch, C, H, W), a severity 1..5 (0 = identity)
and a ``torch.Generator`` for the random ones, and returns a batch in [0, 1]; the same seed gives the
same corrupted batch. Severity parameters follow the CIFAR-C convention loosely (our own values for
small images, not a reproduction of the released datasets):

gaussian_noise, shot_noise, impulse_noise, gaussian_blur, contrast, brightness, pixelate, jpeg
(JPEG is approximated by 8x8 block-DCT coefficient quantisation, no external codec).

:func:`evaluate_corruptions` un-normalizes each batch with the dataset's mean/std, corrupts it in
[0, 1], re-normalizes and reports top-1 per corruption and severity.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

_GAUSS = (0.04, 0.06, 0.08, 0.09, 0.10)
_SHOT = (500.0, 250.0, 100.0, 75.0, 50.0)
_IMPULSE = (0.01, 0.02, 0.03, 0.05, 0.07)
_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
_BRIGHT = (0.05, 0.1, 0.15, 0.2, 0.3)
_PIXELATE = (2, 3, 4, 5, 6)  # block size in pixels at 32 x 32
_JPEG = (80, 65, 58, 50, 40)


def _noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)


def _uniform(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)


def gaussian_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    return (x + _GAUSS[severity - 1] * _noise(x, gen)).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    lam = _SHOT[severity - 1]
    rate = (x * lam).clamp_min(0).cpu()
    return (torch.poisson(rate, generator=gen).to(x.device, x.dtype) / lam).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Salt and pepper: a fraction of the values set to 0 or 1 (half each)."""
    amount = _IMPULSE[severity - 1]
    u, salt = _uniform(x, gen), _uniform(x, gen)
    hit = u < amount
    return torch.where(hit, (salt < 0.5).to(x.dtype), x)


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, severity: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding); sigma in pixels scaled to 32-pixel images."""
    sigma = _BLUR[severity - 1] * max(x.shape[-1], x.shape[-2]) / 32
    k = _gaussian_kernel(max(sigma, 1e-3), x.device, x.dtype)
    c, r = x.shape[1], k.numel() // 2
    y = F.pad(x, (r, r, 0, 0), mode="reflect" if x.shape[-1] > r else "replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="reflect" if x.shape[-2] > r else "replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y.clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Blend toward each image's mean: (x - mean) * c + mean."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * _CONTRAST[severity - 1] + mean).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Additive brightness shift (on all channels; the CIFAR-C version shifts HSV value)."""
    return (x + _BRIGHT[severity - 1]).clamp(0, 1)


def pixelate(x: torch.Tensor, severity: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Replace each k x k block by its mean (k grows with severity, scaled to the image size)."""
    h, w = x.shape[-2:]
    k = max(2, round(_PIXELATE[severity - 1] * max(h, w) / 32))
    small = F.avg_pool2d(x, k, k, ceil_mode=True)
    big = small.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
    return big[..., :h, :w].clamp(0, 1)


def _dct_matrix(n: int, device, dtype) -> torch.Tensor:
    i = torch.arange(n, device=device, dtype=dtype)
    m = torch.cos(math.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


_JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)


def jpeg(x: torch.Tensor, severity: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """JPEG-like: 8x8 block DCT per channel, quantised with the standard luminance table at the quality."""
    quality = _JPEG[severity - 1]
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    q = ((_JPEG_LUMA * scale + 50) / 100).floor().clamp_min(1).to(x.device, x.dtype) / 255
    b, c, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8
    y = F.pad(x, (0, pw, 0, ph), mode="replicate") - 0.5
    hh, ww = h + ph, w + pw
    blocks = y.reshape(b, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)
    d = _dct_matrix(8, x.device, x.dtype)
    coef = d @ blocks @ d.T
    coef = torch.round(coef / q) * q
    rec = (d.T @ coef @ d).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hh, ww)
    return (rec[..., :h, :w] + 0.5).clamp(0, 1)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "pixelate": pixelate,
    "jpeg": jpeg,
}
DEFAULT_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness")


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int = 0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Corruption ``name`` at ``severity`` (0: identity, 1..5) of a [0, 1] batch; deterministic in ``seed``
    (or draws from ``generator`` when given; its state advances)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if not 0 <= severity <= 5:
        raise ValueError(f"severity must be 0..5, got {severity}")
    if severity == 0:
        return x
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    return CORRUPTIONS[name](x, severity, gen)


def _stats(values: Sequence[float] | torch.Tensor, channels: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=like.dtype, device=like.device).flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    return t.view(1, channels, 1, 1)


@torch.no_grad()
def evaluate_corruptions(model: torch.nn.Module, loader, mean, std,
                         corruptions: Sequence[str] = DEFAULT_CORRUPTIONS,
                         severities: Sequence[int] = (1, 2, 3, 4, 5), *, seed: int = 0) -> dict[str, dict[int, float]]:
    """Top-1 (%) of ``model`` on ``loader`` under each corruption and severity: {name: {severity: top1}}.

    Batches from ``loader`` (``(images, targets[, indices])``) are normalized with ``mean``/``std``
    (per channel, or scalars; use mean 0, std 1 for [0, 1] inputs): un-normalize, corrupt in [0, 1],
    re-normalize. The noise of each (corruption, severity) comes from one generator seeded by ``seed``,
    so results are reproducible. The model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, dict[int, float]] = {}
    try:
        for name in corruptions:
            if name not in CORRUPTIONS:
                raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
            out[name] = {}
            for sev in severities:
                gen = torch.Generator().manual_seed(seed)
                correct = total = 0
                for batch in loader:
                    images, targets = batch[0].to(device), batch[1].to(device)
                    if targets.numel() == 0:
                        continue
                    if int(sev) == 0:  # identity: the batch exactly as the loader gives it
                        logits = model(images)
                    else:
                        m = _stats(mean, images.shape[1], images)
                        s = _stats(std, images.shape[1], images)
                        raw = (images.float() * s + m).clamp(0, 1)
                        bad = corrupt(raw, name, int(sev), generator=gen)
                        logits = model(((bad - m) / s).to(images.dtype))
                    correct += int((logits.argmax(1) == targets).sum())
                    total += targets.numel()
                out[name][int(sev)] = 100.0 * correct / max(total, 1)
    finally:
        model.train(was_training)
    return out
