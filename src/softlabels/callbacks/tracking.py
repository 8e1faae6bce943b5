"""What the experiment-tracker loggers (TensorBoard, W&B, MLflow) share.

* :func:`epoch_scalars` names the scalars of an epoch record the same way for every tracker:
  ``loss/train`` and ``loss/train_<term>`` (training loss, total and by term), ``loss/test``,
  ``loss/val`` (mean cross-entropy), ``top1/<split>``, ``top5/<split>`` (%), ``lr`` (and
  ``lr/<optimizer>`` for methods with several optimizers), ``regularization/share`` (fraction
  of samples whose soft label regularizes, at the method's temperature) and the other
  ``regularization/*`` counts, ``wsl/weight_*`` (WSL weight mean and quantiles). Any other
  numeric field keeps its metrics.jsonl name.
* :func:`epoch_histograms`: the histograms of a record (the WSL weight histogram over [0, 1]).
* :func:`require`: a one-line error naming the optional extra when a tracker library is missing.
"""
from __future__ import annotations

import importlib.util
import math
import re
from typing import Any

from softlabels.errors import UserError

# record key -> (tracker tag, value range of the bins)
HISTOGRAMS = {"wsl_weight_hist": ("wsl/weight", (0.0, 1.0))}

_SPLIT_TOPK = re.compile(r"^(train|val|test)_top(\d+)$")
_PREFIXES = (
    ("train_loss_", "loss/train_"),
    ("reg_fraction", "regularization/share"),
    ("reg_", "regularization/"),
    ("wsl_weight_", "wsl/weight_"),
    ("teacher_cache_", "teacher_cache/"),
    ("lr_", "lr/"),
)
_EXACT = {"train_loss": "loss/train", "test_loss": "loss/test", "val_loss": "loss/val", "lr": "lr"}


def scalar_tag(key: str) -> str:
    """The tracker name of a metrics.jsonl field (see the module docstring)."""
    if key in _EXACT:
        return _EXACT[key]
    match = _SPLIT_TOPK.match(key)
    if match:
        return f"top{match.group(2)}/{match.group(1)}"
    for prefix, tag in _PREFIXES:
        if key.startswith(prefix):
            return tag + key[len(prefix):]
    return key


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """Finite numeric fields of an epoch record under their tracker names (``epoch`` itself left out)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[scalar_tag(key)] = float(value)
    return out


def trainer_scalars(trainer, record: dict[str, Any]) -> dict[str, float]:
    """:func:`epoch_scalars` plus ``lr/<name>`` for every optimizer other than "main" (DFA, ProKT)."""
    out = epoch_scalars(record)
    for name, optimizer in (getattr(trainer, "optimizers", None) or {}).items():
        if name != "main" and optimizer.param_groups:
            out[f"lr/{name}"] = float(optimizer.param_groups[0]["lr"])
    return out


def epoch_histograms(record: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """``tag -> (counts, bin_edges)`` for the histogram fields of a record (len(edges) = len(counts) + 1)."""
    out = {}
    for key, (tag, (low, high)) in HISTOGRAMS.items():
        counts = record.get(key)
        if not isinstance(counts, list) or not counts or sum(counts) <= 0:
            continue
        width = (high - low) / len(counts)
        out[tag] = ([float(c) for c in counts], [round(low + i * width, 12) for i in range(len(counts) + 1)])
    return out


def flat_config(obj: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values of a nested config dict (for MLflow parameters)."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flat_config(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): "null" if obj is None else str(obj)}


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (libraries' errors can run to pages)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def require(package: str, *, logger: str, extra: str) -> None:
    """UserError naming the extra to install when ``package`` cannot be imported."""
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(f"logger '{logger}' needs the {package} package: pip install 'softlabels[{extra}]'")
