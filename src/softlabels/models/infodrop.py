"""InfoDrop (Informative Dropout, ICML 2020): drop low-self-information (texture-like) activations.

For every output position p of a layer, the patch of the layer's *input* under p is compared with
copies of itself shifted by random offsets (i, j) in [-R, R]^2 (R = 3, 9 offsets redrawn every forward,
shared across the batch): D_ij(p) = squared L2 distance summed over channels and the k x k patch window
(the layer's stride). A Gaussian kernel with data-adaptive bandwidth, K_ij = exp(-D_ij / mean(D) / (2h^2))
(h = 1, mean over batch, offsets and positions), gives the local likelihood p_hat(p) = mean_ij K_ij(p)
and the self-information I(p) = -log p_hat(p). Texture repeats locally, so its patches are likely
(high p_hat, low I). The drop distribution, shared by all channels, is prob(p) ∝ p_hat(p)^(1/T)
(computed in log space, normalised over positions per sample); per (sample, channel)
floor(drop_rate * H * W) positions are drawn **with replacement** and zeroed in the layer's output.
Kept values are never rescaled. The layer is the identity in eval mode and when ``active`` is False
(the fine-tuning phase of the protocol: train with InfoDrop, then fine-tune without it).

Settings from the paper's code: (drop_rate 1.5, T 0.03) for domain generalization, (0.1, 0.5) for
few-shot. ``num_offsets=None`` uses all (2R+1)^2 offsets (deterministic; the paper's formula).

Deviation from the official layer, documented: the shift/patch padding defaults to ``replicate``
(a constant image then has a uniform distribution and zero padding does not make borders look
"informative"); ``padding_mode="zeros"`` reproduces the official zero padding.

Insertion into a zoo model: :func:`insert_infodrop` hooks the modules named by feature names
(``model.feature_layers``) so that their output goes through an InfoDrop layer, scored on the
module's input. The layers are kept in ``model.infodrop_layers`` (no parameters or buffers, so the
state dict and checkpoints are unchanged); :func:`set_infodrop_active` switches them for fine-tuning.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.features import resolve_feature

PRESETS = {"domain_generalization": (1.5, 0.03), "few_shot": (0.1, 0.5)}


class InfoDrop(nn.Module):
    """Informative dropout on ``x_out`` scored from ``x_in`` (``x_out = x_in`` when called with one tensor).

    Args:
        drop_rate: positions drawn per (sample, channel) = floor(drop_rate * H_out * W_out), with
            replacement (so the realized drop fraction is below ``drop_rate`` and below 1).
        temperature: T in prob ∝ p_hat^(1/T); small T concentrates drops on the most texture-like positions.
        radius: R, offsets uniform in [-R, R]^2.
        num_offsets: offsets drawn per forward (None: all (2R+1)^2, deterministic).
        bandwidth: h of the Gaussian kernel (relative to the mean distance).
        kernel_size, stride, padding, dilation: patch geometry mapping x_in positions to x_out positions
            (the wrapped layer's; 1/1/0/1 = per-pixel patches on the same resolution).
        min_pool: (kernel, stride, padding) of a max-pool that follows the layer; the drop score is
            min-pooled with that geometry (None: no pooling).
        padding_mode: "replicate" (default) or "zeros" (the official code).
    """

    def __init__(self, drop_rate: float = 1.5, temperature: float = 0.03, *, radius: int = 3,
                 num_offsets: int | None = 9, bandwidth: float = 1.0, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, dilation: int = 1, min_pool: tuple[int, int, int] | None = None,
                 padding_mode: Literal["replicate", "zeros"] = "replicate") -> None:
        super().__init__()
        if drop_rate < 0 or temperature <= 0 or radius < 1 or bandwidth <= 0:
            raise ValueError("InfoDrop needs drop_rate >= 0, temperature > 0, radius >= 1, bandwidth > 0")
        if padding_mode not in ("replicate", "zeros"):
            raise ValueError(f"padding_mode must be 'replicate' or 'zeros', got {padding_mode!r}")
        self.drop_rate, self.temperature = float(drop_rate), float(temperature)
        self.radius, self.num_offsets, self.bandwidth = int(radius), num_offsets, float(bandwidth)
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.min_pool = tuple(min_pool) if min_pool is not None else None
        self.padding_mode = padding_mode
        self.active = True

    def extra_repr(self) -> str:
        return (f"drop_rate={self.drop_rate}, temperature={self.temperature}, radius={self.radius}, "
                f"num_offsets={self.num_offsets}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"active={self.active}")

    # ---------------------------------------------------------------- scores
    def _offsets(self, device) -> torch.Tensor:
        r = self.radius
        if self.num_offsets is None:
            grid = torch.arange(-r, r + 1, device=device)
            return torch.cartesian_prod(grid, grid)
        return torch.randint(-r, r + 1, (int(self.num_offsets), 2), device=device)

    @torch.no_grad()
    def likelihood(self, x_in: torch.Tensor) -> torch.Tensor:
        """p_hat (batch, 1, H_out, W_out): kernel density of each patch among its shifted copies, in (0, 1]."""
        x = x_in.detach().float()
        r, p = self.radius, self.padding
        mode = "replicate" if self.padding_mode == "replicate" else "constant"
        xp = F.pad(x, (p + r,) * 4, mode=mode)
        h, w = x.shape[-2] + 2 * p, x.shape[-1] + 2 * p
        center = xp[..., r:r + h, r:r + w]
        window = torch.ones(1, 1, self.kernel_size, self.kernel_size, device=x.device)
        dists = []
        for i, j in self._offsets(x.device).tolist():
            shifted = xp[..., r + i:r + i + h, r + j:r + j + w]
            d = (center - shifted).pow(2).sum(dim=1, keepdim=True)
            dists.append(F.conv2d(d, window, stride=self.stride, dilation=self.dilation))
        dist = torch.stack(dists)  # (offsets, batch, 1, H_out, W_out)
        scale = dist.mean().clamp_min(1e-12) * 2 * self.bandwidth**2
        return torch.exp(-dist / scale).mean(dim=0)

    @torch.no_grad()
    def drop_probability(self, x_in: torch.Tensor) -> torch.Tensor:
        """The drop distribution (batch, 1, H_out, W_out), each sample's map summing to 1."""
        score = self.likelihood(x_in).clamp_min(1e-30).log() / self.temperature
        if self.min_pool is not None:
            k, s, pad = self.min_pool
            score = -F.max_pool2d(-score, k, s, pad)
        b, _, hh, ww = score.shape
        return torch.softmax(score.reshape(b, -1), dim=1).reshape(b, 1, hh, ww)

    @torch.no_grad()
    def drop_mask(self, x_in: torch.Tensor, out_shape: torch.Size) -> torch.Tensor:
        """{0, 1} mask of ``out_shape`` (batch, C, H, W): positions sampled per (sample, channel)."""
        b, c, hh, ww = out_shape
        prob = self.drop_probability(x_in)
        if prob.shape[-2:] != (hh, ww):
            raise ValueError(
                f"InfoDrop scores are {tuple(prob.shape[-2:])} but the output is {(hh, ww)}: set kernel_size/"
                "stride/padding to the wrapped layer's geometry (or score the output: source='output')"
            )
        n = int(self.drop_rate * hh * ww)
        mask = torch.ones(b * c, hh * ww, device=prob.device)
        if n > 0:
            rows = prob.reshape(b, 1, -1).expand(b, c, hh * ww).reshape(b * c, -1)
            idx = torch.multinomial(rows, n, replacement=True)
            mask.scatter_(1, idx, 0.0)
        return mask.reshape(b, c, hh, ww)

    def forward(self, x_in: torch.Tensor, x_out: torch.Tensor | None = None) -> torch.Tensor:
        out = x_in if x_out is None else x_out
        if not self.training or not self.active or self.drop_rate == 0:
            return out
        return out * self.drop_mask(x_in, out.shape).to(out.dtype)


def _geometry(module: nn.Module, x_in: torch.Tensor, x_out: torch.Tensor) -> dict[str, int]:
    """Patch geometry mapping the module's input to its output: a Conv2d's own; 1x1 for an elementwise
    module (ReLU, BN) at equal resolution; else 3x3 patches, pad 1, stride = the resolution ratio."""
    if isinstance(module, nn.Conv2d) and isinstance(module.padding, tuple):
        return {"kernel_size": module.kernel_size[0], "stride": module.stride[0], "padding": module.padding[0],
                "dilation": module.dilation[0]}
    stride = max(1, round(x_in.shape[-1] / x_out.shape[-1]))
    elementwise = not any(True for _ in module.children()) and not hasattr(module, "kernel_size")
    kernel = 1 if elementwise and stride == 1 else 3
    return {"kernel_size": kernel, "stride": stride, "padding": kernel // 2, "dilation": 1}


def insert_infodrop(model: nn.Module, after: list[str], *, source: Literal["input", "output"] = "input",
                    input_from: str | None = None, **params) -> nn.Module:
    """Route the outputs of the modules named ``after`` (feature names or ``module:PATH``) through InfoDrop.

    Each named module gets a forward hook returning the dropped output. The drop is scored on
    (``source="input"``, the official layer's choice) the module's input, or on the input of the
    module ``input_from`` names when given -- e.g. the official ImageNet-ResNet placement
    ``after=["stem"], input_from="module:conv1", kernel_size=7, stride=2, padding=3, min_pool=(3, 2, 1)``
    scores image patches with conv1's geometry and drops after the max-pool -- or (``source="output"``)
    on the module's own output. Unless ``kernel_size``/``stride``/``padding`` are given, the patch
    geometry is inferred on the first call: a Conv2d's own, 1x1 for elementwise modules at equal
    resolution, else 3x3 patches, pad 1, stride = input/output resolution ratio.
    ``params`` go to :class:`InfoDrop`. Insert before building a Distiller so that feature hooks
    registered later see the dropped output. The layers are ``model.infodrop_layers`` (a ModuleDict
    without state, so train/eval follow the model and checkpoints are unchanged). Returns ``model``.
    """
    if source not in ("input", "output"):
        raise ValueError(f"source must be 'input' or 'output', got {source!r}")
    if not hasattr(model, "infodrop_layers"):
        model.infodrop_layers = nn.ModuleDict()
    explicit = {"kernel_size", "stride", "padding"} & set(params)
    for name in after:
        module = resolve_feature(model, name)
        layer = InfoDrop(**params)
        key = name.replace(".", "_").replace(":", "_")
        model.infodrop_layers[key] = layer
        state: dict = {"configured": bool(explicit) or source == "output", "x_in": None}
        scored = resolve_feature(model, input_from) if input_from is not None and source == "input" else None
        if scored is not None:

            def keep_input(mod, inputs, state=state, layer=layer):
                if layer.training and layer.active:
                    state["x_in"] = inputs[0]

            scored.register_forward_pre_hook(keep_input)

        def hook(mod, inputs, output, layer=layer, state=state, scored=scored, name=name):
            if not layer.training or not layer.active:
                return None
            if source == "output":
                x_in = output
            elif scored is not None:
                x_in, state["x_in"] = state["x_in"], None
                if x_in is None:
                    raise RuntimeError(f"InfoDrop after {name!r}: {input_from!r} did not run before it")
            else:
                x_in = inputs[0]
            if not state["configured"]:
                for k, v in _geometry(scored or mod, x_in, output).items():
                    setattr(layer, k, v)
                state["configured"] = True
            return layer(x_in, output)

        module.register_forward_hook(hook)
    return model


def infodrop_layers(model: nn.Module) -> list[InfoDrop]:
    """The InfoDrop layers of ``model`` (inserted or built in)."""
    return [m for m in model.modules() if isinstance(m, InfoDrop)]


def set_infodrop_active(model: nn.Module, active: bool) -> None:
    """Turn every InfoDrop layer of ``model`` on (training phase) or off (fine-tuning phase)."""
    for layer in infodrop_layers(model):
        layer.active = bool(active)
