"""Top-1/top-5 accuracy and mean cross-entropy of a model on a loader."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from softlabels.engine.distributed import DistInfo, all_reduce_sum
from softlabels.engine.metrics import topk_correct


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, *, dist_info: DistInfo | None = None,
             autocast=contextlib.nullcontext) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean CE of ``model`` on ``loader``; restores the model's mode.

    Under torchrun each process evaluates its shard and the counts are summed over processes.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # top-1, top-5, CE sum, count
    for images, targets, _ in loader:
        if targets.numel() == 0:
            continue
        with autocast():
            logits = model(images)
        logits = logits.float()
        hits = topk_correct(logits, targets, (1, 5))
        ce = nn.functional.cross_entropy(logits, targets, reduction="sum")
        totals += torch.stack([torch.tensor(float(hits[1])), torch.tensor(float(hits[5])), ce.double().cpu(),
                               torch.tensor(float(targets.numel()))]).to(device)
    all_reduce_sum(totals, dist_info or DistInfo())
    model.train(was_training)
    c1, c5, loss_sum, n = totals.tolist()
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss_sum / n}


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model.state_dict()`` on the same device (a snapshot that later steps leave alone)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def evaluate_weights(model: nn.Module, weights: dict, loader, num_classes: int, **kwargs) -> dict[str, float]:
    """:func:`evaluate` of ``model`` with ``weights`` loaded; the model's own weights are put back afterwards."""
    current = state_copy(model)
    model.load_state_dict(weights)
    try:
        return evaluate(model, loader, num_classes, **kwargs)
    finally:
        model.load_state_dict(current)
