"""Contrastive Representation Distillation, CRD (Tian et al., ICLR 2020, https://arxiv.org/abs/1910.10699).

Student and teacher penultimate ("pooled") features are linearly embedded to ``feat_dim`` (128)
and L2-normalised (``v_s``, ``v_t``; both embeddings train with the student). The NCE objective
contrasts each anchor with one positive and ``nce_k`` negatives taken from a memory of the *other*
network's embeddings::

    P(i, j) = exp(v_anchor(i) . m(j) / nce_t) / Z          (Z fixed at the first batch: mean * n_data)
    L_NCE   = -1/B sum_i [ log P_pos / (P_pos + K/n_data + eps) + sum_neg log (K/n_data) / (P_neg + K/n_data + eps) ]
    L_CRD   = L_NCE(student anchors vs teacher memory) + L_NCE(teacher anchors vs student memory)

(RepDistiller's ``ContrastLoss``, eps 1e-7; n_data = the number of training samples, or the queue
size; K/n_data and Z scale together, so n_data only matters through eps). Term ``crd`` = ``weight`` (beta 0.8) * L_CRD, plus
``ce`` and, for CRD+KD, ``kd``.

Two memories (``memory``):

* ``bank`` (the paper): one embedding per training sample for each network, a buffer of
  ``data.info.full_train_size`` rows indexed by ``batch.indices``, updated with momentum
  ``nce_m`` (0.5) and renormalised after the scores are computed. Each anchor's ``nce_k``
  negatives are distinct training samples of *other* classes, drawn uniformly **without
  replacement** as RepDistiller's CIFAR dataset does (``np.random.choice(cls_negative[target], k,
  replace=False)``; its alias sampler is only the fallback when the dataset gives no indices);
  ``negatives: with_replacement`` draws them independently instead. The positive is the sample
  itself (``mode: exact``) or a random training sample of its class (``relax``). Its size grows with the
  dataset (RepDistiller issue #40).
* ``queue`` (MoCo-style): fixed-size FIFO buffers of the last ``queue_size`` detached student and
  teacher embeddings and their labels, so memory does not depend on the dataset size. The
  positive is the other network's current (detached) embedding of the same image; ``nce_k``
  negatives are drawn with replacement from queue entries of other classes (the queue starts
  filled with random vectors labelled -1, which count as negatives for every class). ``relax``
  needs the per-sample bank and is refused with ``queue``.

``nce_k`` is capped to the number of candidates (other-class training samples, or the queue
size) so tiny datasets work. Negatives are drawn with a generator seeded from (data seed, epoch,
step in the epoch), so a resumed run draws the same negatives as an uninterrupted one; the bank,
queue, queue pointer and Z constants are buffers of ``auxiliary["memory"]`` and are checkpointed.
Under DDP, note that DDP broadcasts rank 0's buffers at every forward, so only rank 0's memory
updates survive (the paper's code is single-process).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from softlabels.data.base import derive_seed
from softlabels.errors import ConfigError
from softlabels.losses import kd_loss
from softlabels.methods.base import Batch, Distiller, MethodParams, register_method

STREAM_CRD = 40  # stream tag of the negative sampling
NCE_EPS = 1e-7


class CRDParams(MethodParams):
    """CRD-benchmark defaults (resnet32x4 -> resnet8x4): beta 0.8, feat_dim 128, K 16384, T 0.07, m 0.5."""

    weight: float = Field(0.8, ge=0, description="beta: multiplies the CRD (NCE) loss")
    ce_weight: float = Field(1.0, ge=0, description="multiplies the hard-label CE")
    kd_weight: float = Field(0.0, ge=0, description="multiplies T^2 * KL(teacher || student); 1 for CRD+KD")
    temperature: float = Field(4.0, gt=0, description="KD temperature (used when kd_weight > 0)")
    feat_dim: int = Field(128, ge=1, description="embedding dimension")
    nce_k: int = Field(16384, ge=1, description="negatives per anchor (capped to the candidates available)")
    nce_t: float = Field(0.07, gt=0, description="NCE temperature")
    nce_m: float = Field(0.5, ge=0, lt=1, description="momentum of the memory-bank update")
    mode: Literal["exact", "relax"] = Field("exact", description="positive: the sample itself, or one of its class")
    negatives: Literal["without_replacement", "with_replacement"] = Field(
        "without_replacement", description="bank: distinct negatives per anchor (RepDistiller's CIFAR dataset) or not")
    memory: Literal["bank", "queue"] = Field("bank", description="per-sample memory bank (paper) or fixed FIFO queue")
    queue_size: int = Field(16384, ge=1, description="entries of the FIFO queue (memory: queue)")
    student_feature: str = Field("pooled", description="student feature that is embedded")
    teacher_feature: str = Field("pooled", description="teacher feature that is embedded")

    @model_validator(mode="after")
    def _relax_needs_bank(self):
        if self.mode == "relax" and self.memory == "queue":
            raise ValueError("mode 'relax' draws the positive from the per-sample memory bank; use memory: bank")
        return self


def nce_loss(probs: torch.Tensor, n_data: int, eps: float = NCE_EPS) -> torch.Tensor:
    """RepDistiller's ContrastLoss (Eq. 18 of the paper) as a float32 scalar.

    Args:
        probs: (B, 1 + K) normalised scores exp(score / T) / Z; column 0 the positive, then K negatives.
        n_data: size of the candidate set (noise distribution P_n = 1 / n_data).
    """
    probs = probs.float()
    bsz, k = probs.shape[0], probs.shape[1] - 1
    noise = k / float(n_data)
    log_pos = torch.log(probs[:, 0] / (probs[:, 0] + noise + eps))
    log_neg = torch.log(noise / (probs[:, 1:] + noise + eps))
    return -(log_pos.sum() + log_neg.sum()) / bsz


class Embed(nn.Module):
    """Linear embedding + L2 normalisation: (N, ...) -> (N, dim_out)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def _random_memory(rows: int, dim: int) -> torch.Tensor:
    """RepDistiller's memory initialisation: uniform in +-1/sqrt(dim/3) (rows of norm ~1)."""
    stdv = 1.0 / math.sqrt(dim / 3)
    return torch.rand(rows, dim).mul_(2 * stdv).add_(-stdv)


class MemoryBank(nn.Module):
    """One student and one teacher embedding per training-set position, plus the sampling tables.

    Buffers (checkpointed): ``memory_s``, ``memory_t`` (full_train_size, dim), ``z`` (2,) the
    normalisation constants (student anchors, teacher anchors; -1 = not yet set). Non-persistent
    buffers derived from the training set: ``order`` (training positions sorted by class),
    ``class_start`` / ``class_count`` (C,).
    """

    def __init__(self, full_size: int, dim: int, indices: torch.Tensor, labels: torch.Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("memory_s", _random_memory(full_size, dim))
        self.register_buffer("memory_t", _random_memory(full_size, dim))
        self.register_buffer("z", torch.full((2,), -1.0))
        labels = labels.long().cpu()
        counts = torch.bincount(labels, minlength=num_classes)
        self.register_buffer("order", indices.long().cpu()[torch.argsort(labels, stable=True)], persistent=False)
        self.register_buffer("class_count", counts, persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)

    @property
    def num_candidates(self) -> int:
        return int(self.order.numel())

    def sample(self, targets: torch.Tensor, indices: torch.Tensor, k: int, relax: bool, gen: torch.Generator,
               replacement: bool = False):
        """(B, 1 + k) memory rows: the positive, then k negatives from other classes.

        Without replacement (default) the k negatives of one anchor are distinct (k must not exceed
        the smallest number of other-class samples); with replacement each is drawn independently.
        """
        n = self.order.numel()
        count = self.class_count[targets].unsqueeze(1)
        start = self.class_start[targets].unsqueeze(1)
        others = n - count
        if replacement:
            u = (torch.rand(targets.shape[0], k, generator=gen, device=targets.device) * others).long()
            u = torch.minimum(u, others - 1)
        else:  # the k largest of uniform keys over each anchor's candidates: a uniform k-subset
            width = int(others.max())
            keys = torch.rand(targets.shape[0], width, generator=gen, device=targets.device)
            keys = keys.masked_fill(torch.arange(width, device=targets.device).unsqueeze(0) >= others, -1.0)
            u = torch.topk(keys, k, dim=1, sorted=False).indices
        u = u + (u >= start).long() * count  # skip the anchor's own class block
        negatives = self.order[u]
        if relax:
            r = (torch.rand(targets.shape[0], 1, generator=gen, device=targets.device) * count).long()
            positive = self.order[start + torch.minimum(r, count - 1)]
        else:
            positive = indices.view(-1, 1)
        return torch.cat([positive, negatives], dim=1)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor, momentum: float) -> None:
        for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            mixed = memory[indices] * momentum + v.detach() * (1 - momentum)
            memory.index_copy_(0, indices, F.normalize(mixed, dim=1))


class MemoryQueue(nn.Module):
    """Fixed-size FIFO of recent detached embeddings, independent of the dataset size.

    Buffers (checkpointed): ``queue_s``, ``queue_t`` (size, dim), ``labels`` (size,) (-1 for the
    random initial entries), ``ptr`` () next slot, ``z`` (2,) normalisation constants.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("queue_s", F.normalize(_random_memory(size, dim), dim=1))
        self.register_buffer("queue_t", F.normalize(_random_memory(size, dim), dim=1))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("z", torch.full((2,), -1.0))

    @property
    def num_candidates(self) -> int:
        return int(self.labels.numel())

    def sample(self, targets: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        """(B, k) queue slots holding other-class entries (any slot when a row has none)."""
        valid = self.labels.unsqueeze(0) != targets.unsqueeze(1)
        valid = valid | ~valid.any(dim=1, keepdim=True)
        return torch.multinomial(valid.float(), k, replacement=True, generator=gen)

    @torch.no_grad()
    def enqueue(self, v_s: torch.Tensor, v_t: torch.Tensor, targets: torch.Tensor) -> None:
        size = self.labels.numel()
        v_s, v_t, targets = v_s[-size:], v_t[-size:], targets[-size:]
        slots = (self.ptr + torch.arange(targets.shape[0], device=targets.device)) % size
        self.queue_s[slots] = v_s.detach()
        self.queue_t[slots] = v_t.detach()
        self.labels[slots] = targets
        self.ptr.copy_((self.ptr + targets.shape[0]) % size)


def _normalise(out: torch.Tensor, z: torch.Tensor, which: int, n_data: int) -> torch.Tensor:
    """exp scores / Z, fixing Z = mean * n_data the first time (kept in the buffer, no host sync)."""
    value = torch.where(z[which] < 0, out.detach().mean() * n_data, z[which])
    z[which] = value
    return out / value


@register_method("crd")
class CRD(Distiller):
    """Loss terms: ``ce``, ``crd`` (and ``kd`` when ``kd_weight`` > 0)."""

    Params = CRDParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nce_k = self.params.nce_k  # capped in setup
        self.data_seed = 0
        self.step = 0

    def student_features(self) -> list[str]:
        return [self.params.student_feature]

    def teacher_features(self) -> list[str]:
        return [self.params.teacher_feature]

    def setup(self, sample_images: torch.Tensor, data=None) -> None:
        p = self.params
        s_feats, t_feats = self.sample_features(sample_images)
        s_dim = s_feats[p.student_feature].flatten(1).shape[1]
        t_dim = t_feats[p.teacher_feature].flatten(1).shape[1]
        self.auxiliary["embed_s"] = Embed(s_dim, p.feat_dim)
        self.auxiliary["embed_t"] = Embed(t_dim, p.feat_dim)
        train = getattr(data, "train", None)
        self.data_seed = int(getattr(train, "seed", 0) or 0)
        if p.memory == "queue":
            memory = MemoryQueue(p.queue_size, p.feat_dim)
            self.nce_k = min(p.nce_k, p.queue_size)
        else:
            if data is None:
                raise ConfigError("CRD's memory bank needs the training set (setup(images, data)); or use memory: queue")
            labels = train.dataset_labels
            num_classes = max(int(data.info.num_classes), int(labels.max()) + 1)
            memory = MemoryBank(int(data.info.full_train_size), p.feat_dim, train.indices, labels, num_classes)
            counts = memory.class_count[memory.class_count > 0]
            available = memory.num_candidates - int(counts.max())
            if available < 1:
                raise ConfigError("CRD draws negatives from other classes, but the training set has only one class")
            self.nce_k = min(p.nce_k, available)
        self.auxiliary["memory"] = memory
        self.auxiliary.to(sample_images.device)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.step = 0

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed(derive_seed(self.data_seed, self.epoch, self.step, STREAM_CRD))
        return gen

    @staticmethod
    def _scores(anchor: torch.Tensor, memory: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """anchor (B, D) . memory[rows] (B, R, D) -> (B, R), by whichever way moves less memory.

        The memory is updated in place after the loss is built, so autograd must hold a copy: a
        clone of the whole memory (N x D) when that is smaller than the gathered rows (B x R x D).
        """
        if memory.shape[0] <= rows.numel():
            return (anchor @ memory.clone().t()).gather(1, rows)
        return torch.bmm(memory[rows], anchor.unsqueeze(2)).squeeze(2)

    def contrast_loss(self, v_s: torch.Tensor, v_t: torch.Tensor, targets: torch.Tensor,
                      indices: torch.Tensor | None) -> torch.Tensor:
        """Unweighted CRD loss of normalised embeddings (B, D); updates the memory in training mode."""
        p, memory = self.params, self.auxiliary["memory"]
        gen = self._generator(v_s.device)
        t = p.nce_t
        if isinstance(memory, MemoryBank):
            if indices is None:
                raise RuntimeError("CRD's memory bank needs the sample indices of each batch")
            rows = memory.sample(targets, indices, self.nce_k, p.mode == "relax", gen,
                                 replacement=p.negatives == "with_replacement")
            out_s = torch.exp(self._scores(v_s, memory.memory_t, rows) / t)  # student anchors, teacher memory
            out_t = torch.exp(self._scores(v_t, memory.memory_s, rows) / t)  # teacher anchors, student memory
        else:
            slots = memory.sample(targets, self.nce_k, gen)
            pos = (v_s * v_t.detach()).sum(1, keepdim=True)
            out_s = torch.exp(torch.cat([pos, self._scores(v_s, memory.queue_t, slots)], 1) / t)
            pos = (v_t * v_s.detach()).sum(1, keepdim=True)
            out_t = torch.exp(torch.cat([pos, self._scores(v_t, memory.queue_s, slots)], 1) / t)
        n_data = memory.num_candidates
        loss = nce_loss(_normalise(out_s, memory.z, 0, n_data), n_data) + nce_loss(
            _normalise(out_t, memory.z, 1, n_data), n_data
        )
        if self.training:
            if isinstance(memory, MemoryBank):
                memory.update(indices, v_s, v_t, p.nce_m)
            else:
                memory.enqueue(v_s, v_t, targets)
            self.step += 1
        return loss

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        f_s = batch.student_features[p.student_feature]
        f_t = batch.teacher_features[p.teacher_feature].detach()
        with torch.autocast(device_type=f_s.device.type, enabled=False):  # exp(s / 0.07) needs float32
            v_s = self.auxiliary["embed_s"](f_s.float())
            v_t = self.auxiliary["embed_t"](f_t.float())
            crd = self.contrast_loss(v_s, v_t, batch.targets, batch.indices)
        terms = {
            "ce": p.ce_weight * F.cross_entropy(batch.student_logits.float(), batch.targets),
            "crd": p.weight * crd,
        }
        if p.kd_weight > 0:
            terms["kd"] = p.kd_weight * kd_loss(batch.student_logits, batch.teacher_logits, p.temperature)
        return terms
