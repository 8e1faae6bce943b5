"""Method zoo, part B: AB, FT, FSP, CRD, ReviewKD, OFD.

(1) losses: hand-checked answers and stored regression values (``tests/fixtures/zoo_b_reference.json``,
    written once by ``python tests/test_zoo_b.py --write-reference``);
(2) one training step of every method on resnet32x4 -> resnet8x4 with CIFAR-shaped data;
(3) init phases, and resume across the init/main boundary with the real Trainer;
(4) CRD memory bank / queue state round trips; the queue's size does not depend on the dataset;
(5) Fashion-MNIST-shaped (1x28x28) resnet20 -> resnet8 for every method.
"""
from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import regression
from softlabels.errors import ConfigError
from softlabels.methods import get_method
from softlabels.methods.ab import ab_margin_loss
from softlabels.methods.crd import MemoryBank, MemoryQueue, nce_loss
from softlabels.methods.fsp import fsp_loss, fsp_matrix
from softlabels.methods.ft import factor_transfer_loss
from softlabels.methods.ofd import bn_before_relu, bn_margin, feature_margin, partial_l2
from softlabels.methods.reviewkd import hcl_loss
from softlabels.models import create_model

FIXTURE = Path(__file__).parent / "fixtures" / "zoo_b_reference.json"
METHODS = ["ab", "ft", "fsp", "crd", "reviewkd", "ofd"]
INIT_METHODS = {"ab": "ab", "fsp": "fsp", "ft": "ft_rec"}  # method -> its init-phase term
MAIN_TERMS = {"ab": {"ce"}, "fsp": {"ce"}, "ft": {"ce", "ft"}, "crd": {"ce", "crd"}, "reviewkd": {"ce", "reviewkd"},
              "ofd": {"ce", "ofd"}}


# ----------------------------------------------------------------------------- helpers
def fake_data(labels: torch.Tensor, num_classes: int, seed: int = 0):
    """The parts of a DataBundle that setup() reads: sizes, training indices and labels, seed."""
    n = labels.numel()
    return SimpleNamespace(
        info=SimpleNamespace(full_train_size=n, num_classes=num_classes),
        train=SimpleNamespace(indices=torch.arange(n), dataset_labels=labels.clone(), seed=seed),
    )


def build(name, student, teacher, images, data, **params):
    cls = get_method(name)
    method = cls(copy.deepcopy(student), copy.deepcopy(teacher), cls.Params(**params))
    method.setup(images, data)
    return method


def grads(module) -> bool:
    """Whether any parameter of ``module`` received a non-zero gradient."""
    return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())


# ----------------------------------------------------------------------------- (1) known answers
def test_ab_margin_loss_known_answer():
    # (s, t): (-2, -1) already off beyond the margin -> 0; (0.5, -1) -> (0.5 + 1)^2 = 2.25;
    # (2, 1) on beyond the margin -> 0; (0.5, 1) -> (0.5 - 1)^2 = 0.25
    s = torch.tensor([-2.0, 0.5, 2.0, 0.5])
    t = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    assert ab_margin_loss(s, t, 1.0).item() == pytest.approx(2.5)


def test_fsp_matrix_of_a_tiny_map():
    bottom = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]]])  # (1, 2, 2, 2)
    top = torch.tensor([[[[1.0, 1.0], [2.0, 0.0]]]])  # (1, 1, 2, 2)
    g = fsp_matrix(bottom, top)
    assert g.shape == (1, 1, 2)
    # mean over the 4 positions of top * bottom_i: (1 + 2 + 6 + 0) / 4 and (1 + 0 + 0 + 0) / 4
    assert g[0, 0].tolist() == pytest.approx([9 / 4, 1 / 4])
    # the larger map is average-pooled to the smaller: a 4x4 bottom of constant 2 vs a 2x2 top
    g2 = fsp_matrix(torch.full((1, 1, 4, 4), 2.0), top)
    assert g2[0, 0, 0].item() == pytest.approx(2.0 * 4 / 4)
    # loss: mean squared difference of the matrices, summed over consecutive pairs
    maps = [bottom, top, top]
    assert fsp_loss(maps, maps).item() == 0.0


def test_ofd_partial_l2_each_region():
    margin = torch.tensor([-1.0]).view(1, 1, 1, 1)
    # region 1, t <= m: (s - m)^2 where s > m        -> s 0.5: 2.25; s -1.5: 0
    # region 2, m < t <= 0: (s - t)^2 where s > t    -> t -0.5, s 0: 0.25; s -0.7: 0
    # region 3, t > 0: (s - t)^2 always              -> t 1, s -1: 4; s 3: 4
    s = torch.tensor([0.5, -1.5, 0.0, -0.7, -1.0, 3.0]).view(1, 1, 1, 6)
    t = torch.tensor([-2.0, -2.0, -0.5, -0.5, 1.0, 1.0]).view(1, 1, 1, 6)
    assert partial_l2(s, t, margin).item() == pytest.approx(2.25 + 0.25 + 4 + 4)
    for i, expected in enumerate([2.25, 0.0, 0.25, 0.0, 4.0, 4.0]):
        assert partial_l2(s[..., i:i + 1], t[..., i:i + 1], margin).item() == pytest.approx(expected)


def test_ofd_margin_from_bn_and_from_features():
    # N(0, 1): E[x | x < 0] = -phi(0) / Phi(0) = -sqrt(2 / pi); N(0.5, 2): mu - sigma phi(mu/sigma) / Phi(-mu/sigma)
    mu, sigma = 0.5, 2.0
    phi = math.exp(-0.5 * (mu / sigma) ** 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(-mu / sigma / math.sqrt(2)))
    m = bn_margin(torch.tensor([1.0, -2.0, 1.0]), torch.tensor([0.0, 0.5, 5.0]))
    assert m.tolist() == pytest.approx([-math.sqrt(2 / math.pi), mu - sigma * phi / cdf, -3.0], rel=1e-5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, 16, 16, generator=g)
    x[:, 1] = x[:, 1].abs() + 1  # no negative values: -3 std
    est = feature_margin(x)
    assert est[0].item() == pytest.approx(-math.sqrt(2 / math.pi), abs=0.02)
    assert est[1].item() == pytest.approx(-3 * x[:, 1].std(unbiased=False).item(), rel=1e-4)


def test_ofd_finds_the_bn_before_each_pre_relu_feature():
    r = create_model("resnet32x4", 10)
    assert bn_before_relu(r, "stage2_pre_relu") is r.layer2[4].bn2
    w = create_model("wrn_16_2", 10)
    assert bn_before_relu(w, "stage3_pre_relu") is w.bn1
    v = create_model("vgg8", 10)
    assert bn_before_relu(v, "stage1_pre_relu") is v.block1[-1]
    b = create_model("ResNet50", 10)
    assert bn_before_relu(b, "stage4_pre_relu") is b.layer4[2].bn3


def test_crd_nce_loss_by_hand():
    probs = torch.tensor([[0.5, 0.1, 0.2]])
    n = 10
    noise = 2 / n
    eps = 1e-7
    expected = -(math.log(0.5 / (0.5 + noise + eps)) + math.log(noise / (0.1 + noise + eps))
                 + math.log(noise / (0.2 + noise + eps)))
    assert nce_loss(probs, n).item() == pytest.approx(expected, rel=1e-6)


def test_crd_contrast_loss_with_known_embeddings():
    """Three training samples, labels (0, 1, 1): anchor 0's single negative is sample 1 or 2 (equal rows)."""
    student, teacher = create_model("resnet8", 2), create_model("resnet8", 2)
    data = fake_data(torch.tensor([0, 1, 1]), 2)
    m = build("crd", student, teacher, torch.randn(2, 3, 8, 8), data, feat_dim=2, nce_t=0.5)
    assert m.nce_k == 1  # capped: only one other-class sample is guaranteed for class-1 anchors
    mem = m.auxiliary["memory"]
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mem.memory_s.copy_(torch.stack([a, b, b]))
    mem.memory_t.copy_(torch.stack([b, a, a]))
    v_s = torch.tensor([[0.6, 0.8]])
    v_t = torch.tensor([[0.8, 0.6]])
    m.train()
    loss = m.contrast_loss(v_s, v_t, torch.tensor([0]), torch.tensor([0]))
    # student anchor v_s vs teacher memory: positive row 0 = b, negative = a
    out_s = [math.exp(0.8 / 0.5), math.exp(0.6 / 0.5)]
    # teacher anchor v_t vs student memory: positive row 0 = a, negative = b
    out_t = [math.exp(0.8 / 0.5), math.exp(0.6 / 0.5)]
    expected = 0.0
    for out in (out_s, out_t):
        z = sum(out) / 2 * 3  # Z = mean * n_data, fixed on the first batch
        expected += nce_loss(torch.tensor([[o / z for o in out]]), 3).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert mem.z.tolist() == pytest.approx([sum(out_s) / 2 * 3, sum(out_t) / 2 * 3], rel=1e-6)
    # momentum 0.5 update of row 0, renormalised
    assert mem.memory_s[0].tolist() == pytest.approx(F.normalize(0.5 * a + 0.5 * v_s[0], dim=0).tolist(), rel=1e-6)
    assert mem.memory_t[0].tolist() == pytest.approx(F.normalize(0.5 * b + 0.5 * v_t[0], dim=0).tolist(), rel=1e-6)


def test_crd_negatives_come_from_other_classes_and_relax_positives_from_the_same():
    labels = torch.arange(40) % 4
    bank = MemoryBank(40, 8, torch.arange(40), labels, 4)
    targets = torch.tensor([0, 1, 2, 3, 3])
    indices = torch.tensor([0, 1, 2, 3, 7])
    g = torch.Generator().manual_seed(0)
    rows = bank.sample(targets, indices, 500, relax=False, gen=g, replacement=True)
    assert torch.equal(rows[:, 0], indices)
    assert (labels[rows[:, 1:]] != targets[:, None]).all()
    assert set(labels[rows[0, 1:]].tolist()) == {1, 2, 3}  # every other class is reachable
    assert len(set(rows[0, 1:].tolist())) == 30  # ... and every other-class sample
    rows = bank.sample(targets, indices, 10, relax=True, gen=g)
    assert (labels[rows[:, 0]] == targets).all()
    queue = MemoryQueue(16, 8)
    queue.enqueue(torch.randn(12, 8), torch.randn(12, 8), torch.arange(12) % 3)
    slots = queue.sample(torch.tensor([0, 1]), 200, torch.Generator().manual_seed(1))
    assert (queue.labels[slots] != torch.tensor([0, 1])[:, None]).all()


def test_crd_negatives_are_distinct_by_default_like_repdistillers_cifar_dataset():
    labels = torch.arange(40) % 4  # 10 a class: 30 other-class candidates per anchor
    bank = MemoryBank(40, 8, torch.arange(40), labels, 4)
    targets, indices = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3])
    assert get_method("crd").Params().negatives == "without_replacement"
    rows = bank.sample(targets, indices, 30, relax=False, gen=torch.Generator().manual_seed(0))
    for r, t in zip(rows, targets):  # all 30 candidates, each once: exactly the other classes' samples
        assert sorted(r[1:].tolist()) == [i for i in range(40) if labels[i] != t]
    rows = bank.sample(targets, indices, 12, relax=False, gen=torch.Generator().manual_seed(1))
    assert all(len(set(r[1:].tolist())) == 12 for r in rows)
    assert (labels[rows[:, 1:]] != targets[:, None]).all()
    # uniform over the candidates: 2000 draws of 3 from 30, each candidate expected 200 times
    counts = torch.zeros(40)
    g = torch.Generator().manual_seed(2)
    for _ in range(2000):
        counts.index_add_(0, bank.sample(targets[:1], indices[:1], 3, relax=False, gen=g)[0, 1:], torch.ones(3))
    assert counts[labels == 0].sum() == 0 and counts[labels != 0].min() > 140 and counts.max() < 260
    # with replacement, 30 draws from 30 candidates repeat some (probability of none: 30!/30^30 ~ 1e-12)
    rows = bank.sample(targets, indices, 30, relax=False, gen=torch.Generator().manual_seed(0), replacement=True)
    assert any(len(set(r[1:].tolist())) < 30 for r in rows)


def test_crd_method_uses_the_configured_draw(cifar):
    labels = torch.arange(20) % 2
    for negatives, distinct in (("without_replacement", True), ("with_replacement", False)):
        m = build("crd", cifar.student, cifar.teacher, cifar.images, fake_data(labels, 2), nce_k=10,
                  negatives=negatives)
        memory = m.auxiliary["memory"]
        seen = []
        original = memory.sample

        def spy(*args, original=original, seen=seen, **kwargs):
            rows = original(*args, **kwargs)
            seen.append(rows)
            return rows

        memory.sample = spy
        m.train()
        images, targets = cifar.images[:4], labels[:4]
        for _ in range(3):
            m(images, targets, torch.arange(4))
        uniq = [len(set(r[1:].tolist())) for rows in seen for r in rows]
        assert all(u == 10 for u in uniq) if distinct else any(u < 10 for u in uniq)


def _reference_inputs():
    g = torch.Generator().manual_seed(2024)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "s_maps": [r(2, 4, 8, 8), r(2, 4, 4, 4), r(2, 6, 2, 2)],
        "t_maps": [r(2, 4, 8, 8), r(2, 4, 4, 4), r(2, 6, 2, 2)],
        "factor_s": r(2, 3, 4, 4),
        "factor_t": r(2, 3, 2, 2),
        "probs": torch.rand(3, 6, generator=g) * 0.1,
        "margin": -torch.rand(1, 4, 1, 1, generator=g),
        "bn_w": r(5),
        "bn_b": r(5),
    }


def reference_values() -> dict[str, float]:
    x = _reference_inputs()
    s, t = x["s_maps"], x["t_maps"]
    return {
        "ab_margin": ab_margin_loss(s[0], t[0], 1.0).item(),
        "fsp": fsp_loss(s, t).item(),
        "ft_attention_l1": factor_transfer_loss(x["factor_s"], x["factor_t"], 1, "attention").item(),
        "ft_flatten_l1": factor_transfer_loss(x["factor_s"], x["factor_t"], 1, "flatten").item(),
        "ft_attention_l2": factor_transfer_loss(x["factor_s"], x["factor_t"], 2, "attention").item(),
        "nce": nce_loss(x["probs"], 1000).item(),
        "hcl": hcl_loss(s, t).item(),
        "ofd_partial_l2": partial_l2(s[0], t[0], x["margin"]).item(),
        "ofd_bn_margin_sum": bn_margin(x["bn_w"], x["bn_b"]).sum().item(),
    }


def write_reference() -> None:
    regression.write_reference(FIXTURE, reference_values())


def test_losses_match_stored_reference_values():
    regression.assert_matches_reference(FIXTURE, reference_values())


# ----------------------------------------------------------------------------- (2) CIFAR-shaped step
@pytest.fixture(scope="module")
def cifar():
    """resnet32x4 teacher and resnet8x4 student (built once), a CIFAR-shaped batch and a fake training set."""
    torch.manual_seed(0)
    teacher, student = create_model("resnet32x4", 100), create_model("resnet8x4", 100)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=g)
    targets = torch.tensor([3, 17, 3, 99])
    indices = torch.tensor([0, 1, 2, 3])
    labels = torch.randint(0, 100, (300,), generator=g)
    labels[:4] = targets
    return SimpleNamespace(teacher=teacher, student=student, images=images, targets=targets, indices=indices,
                           data=fake_data(labels, 100))


PHASES = [(name, 0) for name in INIT_METHODS] + [(name, 1) for name in METHODS]


@pytest.mark.parametrize("name,epoch", PHASES)
def test_one_training_step_on_resnet32x4_to_resnet8x4(cifar, name, epoch):
    m = build(name, cifar.student, cifar.teacher, cifar.images, cifar.data, **(
        {"init_epochs": 1} if name in INIT_METHODS else {}))
    teacher_before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    m.set_epoch(epoch)
    m.train()
    logits, terms = m(cifar.images, cifar.targets, cifar.indices)
    assert logits.shape == (4, 100)
    in_init = name in INIT_METHODS and epoch < m.init_epochs
    assert set(terms) == ({INIT_METHODS[name]} if in_init else MAIN_TERMS[name])
    assert all(v.dtype == torch.float32 and v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    loss = sum(terms.values())
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.01)
    opt.zero_grad()
    loss.backward()
    student_trains = not (name == "ft" and in_init)
    assert grads(m.student) == student_trains
    if name == "ft":
        assert grads(m.auxiliary["paraphraser"]) == in_init
        assert grads(m.auxiliary["translator"]) == (not in_init)
    elif name in ("crd", "reviewkd", "ofd"):
        assert grads(m.auxiliary)
        assert all(p.grad is not None for p in m.auxiliary.parameters())
    assert all(p.grad is None for p in m.teacher.parameters())
    opt.step()
    for k, v in m.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_ab_connectors_train_only_in_the_init_phase(cifar):
    """resnet8 (16/32/64 channels) -> resnet8x4 (64/128/256): AB needs conv+BN connectors."""
    torch.manual_seed(0)
    teacher, student = create_model("resnet8x4", 100), create_model("resnet8", 100)
    m = build("ab", student, teacher, cifar.images, None, init_epochs=2)
    assert len(list(m.auxiliary.parameters())) > 0
    m.train()
    for epoch, trains in ((0, True), (1, True), (2, False)):
        m.zero_grad(set_to_none=True)
        m.set_epoch(epoch)
        _, terms = m(cifar.images, cifar.targets)
        sum(terms.values()).backward()
        assert set(terms) == ({"ab"} if trains else {"ce"})
        assert grads(m.auxiliary) == trains
        assert all(p.grad is None for p in m.student.fc.parameters()) == trains  # AB does not touch the classifier


def test_ab_kd_option_adds_kd_in_the_main_phase(cifar):
    m = build("ab", cifar.student, cifar.teacher, cifar.images, None, init_epochs=1, kd_weight=1.0)
    m.set_epoch(1)
    _, terms = m(cifar.images, cifar.targets)
    assert set(terms) == {"ce", "kd"}


# ----------------------------------------------------------------------------- (3) init phases, resume
def test_ft_paraphraser_trains_only_in_the_init_phase(cifar):
    m = build("ft", cifar.student, cifar.teacher, cifar.images, None, init_epochs=1)
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    para, trans = m.auxiliary["paraphraser"], m.auxiliary["translator"]

    def step(epoch):
        m.set_epoch(epoch)
        m.train()
        before = [{k: v.clone() for k, v in mod.state_dict().items()} for mod in (para, trans, m.student)]
        _, terms = m(cifar.images, cifar.targets)
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        opt.step()
        return [any(not torch.equal(v, b[k]) for k, v in mod.state_dict().items())
                for mod, b in zip((para, trans, m.student), before)]

    assert step(0) == [True, False, True]  # student changes only through BN running stats
    student_params = [p.clone() for p in m.student.parameters()]
    assert step(1) == [False, True, True]  # paraphraser frozen (momentum and weight decay skip None grads)
    assert any(not torch.equal(a, b) for a, b in zip(student_params, m.student.parameters()))


def test_fsp_refuses_unpaired_channels(cifar):
    teacher, student = create_model("wrn_40_2", 100), create_model("wrn_40_1", 100)
    with pytest.raises(ConfigError, match="WRN-40-1"):
        build("fsp", student, teacher, cifar.images[:2], None)


def test_pre_relu_methods_name_models_without_pre_relu_features(cifar):
    student = create_model("MobileNetV2", 100)
    with pytest.raises(ConfigError, match="MobileNetV2"):
        build("ab", student, cifar.teacher, cifar.images[:2], None)
    with pytest.raises(ConfigError, match="ShuffleNetV2"):
        build("ofd", cifar.student, create_model("ShuffleV2", 100), cifar.images[:2], None)
    with pytest.warns(UserWarning, match="post-ReLU"):
        m = build("ofd", student, cifar.teacher, cifar.images[:2], None)
    assert m.margin_sources == ["bn", "bn", "bn"]


def test_crd_relax_requires_the_bank():
    with pytest.raises(ValidationError, match="relax"):
        get_method("crd").Params(mode="relax", memory="queue")


def _tiny_config(tiny, tmp_path, teacher_path, name, method):
    cfg = tiny(tmp_path, name=name, method=method, teacher={"name": "resnet8", "checkpoint": str(teacher_path)},
               epochs=1)
    cfg["data"]["synthetic"]["train_size"] = 96
    return cfg


@pytest.mark.parametrize("method", [
    {"name": "ab", "init_epochs": 1},
    {"name": "ft", "init_epochs": 1},
    {"name": "fsp", "init_epochs": 1},
    {"name": "crd", "nce_k": 40},
])
def test_resume_across_the_phase_boundary_matches_an_uninterrupted_run(tmp_path, tiny, tiny_teacher, method):
    """Two epochs (init + main for AB/FT/FSP); one run stops after the first and is resumed."""
    from softlabels.config import validate_config
    from softlabels.engine import Trainer
    from softlabels.engine.checkpoint import load_checkpoint

    if method["name"] == "crd":
        extra = {"schedule": {"name": "multistep", "epochs": 2, "milestones": [2]}}
    else:
        extra = {}
    full_cfg = _tiny_config(tiny, tmp_path, tiny_teacher, "full", method) | extra
    full = Trainer(validate_config(full_cfg))
    assert full.total_epochs == 2
    full.fit()

    cut_exp = validate_config(_tiny_config(tiny, tmp_path, tiny_teacher, "cut", method) | extra)
    first = Trainer(cut_exp)
    first.total_epochs = 1  # the "kill": stop after the first epoch's checkpoint
    first.fit()
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    Trainer(cut_exp, resume=True).fit()

    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert set(a["auxiliary"]) == set(b["auxiliary"])
    for k in a["auxiliary"]:
        assert torch.equal(a["auxiliary"][k], b["auxiliary"][k]), k
    rows = [json.loads(r) for r in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    if method["name"] in INIT_METHODS:
        assert f"train_loss_{INIT_METHODS[method['name']]}" in rows[0] and "train_loss_ce" not in rows[0]
        assert "train_loss_ce" in rows[1] and f"train_loss_{INIT_METHODS[method['name']]}" not in rows[1]
    if method["name"] == "crd":
        assert {"memory.memory_s", "memory.memory_t", "memory.z"} <= set(a["auxiliary"])


# ----------------------------------------------------------------------------- (4) CRD state
@pytest.mark.parametrize("memory", ["bank", "queue"])
def test_crd_memory_round_trips_through_the_auxiliary_state(cifar, memory):
    kw = {"memory": memory, "nce_k": 50, "queue_size": 32}
    m = build("crd", cifar.student, cifar.teacher, cifar.images, cifar.data, **kw)
    m.train()
    m.set_epoch(3)
    for _ in range(2):
        _, terms = m(cifar.images, cifar.targets, cifar.indices)
    state = copy.deepcopy(m.auxiliary.state_dict())
    names = {"bank": {"memory.memory_s", "memory.memory_t", "memory.z"},
             "queue": {"memory.queue_s", "memory.queue_t", "memory.labels", "memory.ptr", "memory.z"}}[memory]
    assert names <= set(state)
    assert (state["memory.z"] > 0).all()
    other = build("crd", cifar.student, cifar.teacher, cifar.images, cifar.data, **kw)
    other.auxiliary.load_state_dict(state)
    other.student.load_state_dict(m.student.state_dict())
    for k, v in other.auxiliary.state_dict().items():
        assert torch.equal(v, state[k]), k
    # same state, same (epoch, step): the same negatives and the same loss
    other.train()
    other.set_epoch(3)
    other.step = m.step
    _, t1 = m(cifar.images, cifar.targets, cifar.indices)
    _, t2 = other(cifar.images, cifar.targets, cifar.indices)
    assert t1["crd"].item() == t2["crd"].item()


def test_crd_queue_size_does_not_depend_on_the_dataset(cifar):
    sizes = {}
    for n in (300, 5000):
        labels = torch.arange(n) % 100
        for memory in ("bank", "queue"):
            m = build("crd", cifar.student, cifar.teacher, cifar.images, fake_data(labels, 100), memory=memory,
                      queue_size=64)
            sizes[memory, n] = sum(v.numel() for v in m.auxiliary["memory"].state_dict().values())
    assert sizes["queue", 300] == sizes["queue", 5000] == 64 * 128 * 2 + 64 + 1 + 2
    assert sizes["bank", 5000] > sizes["bank", 300]
    m = build("crd", cifar.student, cifar.teacher, cifar.images, None, memory="queue")  # no data needed
    assert m.nce_k == 16384


# ----------------------------------------------------------------------------- (5) Fashion-MNIST shape
@pytest.mark.parametrize("name", METHODS)
def test_fashion_mnist_shaped_resnet20_to_resnet8(name):
    torch.manual_seed(0)
    teacher, student = create_model("resnet20", 10, in_channels=1), create_model("resnet8", 10, in_channels=1)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 1, 28, 28, generator=g)
    targets = torch.arange(8) % 10
    labels = torch.arange(60) % 10
    params = {"init_epochs": 1} if name in INIT_METHODS else {}
    m = build(name, student, teacher, images, fake_data(labels, 10), **params)
    m.train()
    for epoch in (0, 1):
        m.set_epoch(epoch)
        m.zero_grad(set_to_none=True)
        _, terms = m(images, targets, torch.arange(8))
        loss = sum(terms.values())
        assert torch.isfinite(loss)
        loss.backward()
        assert grads(m.student) or (name == "ft" and epoch == 0)


if __name__ == "__main__":
    if "--write-reference" in sys.argv:
        write_reference()


def test_reviewkd_default_weight_is_the_reference_cifar_value(cifar):
    """mdistiller's configs/cifar100/reviewkd.yaml and ReviewKD's CIFAR script use 5 (not the cfg fallback 1)."""
    import yaml

    assert get_method("reviewkd").Params().weight == 5.0
    m = build("reviewkd", cifar.student, cifar.teacher, cifar.images, cifar.data)
    m.eval()
    m.set_epoch(40)  # past the 20-epoch warm-up
    with torch.no_grad():
        _, terms = m(cifar.images, cifar.targets, cifar.indices)
    one = build("reviewkd", cifar.student, cifar.teacher, cifar.images, cifar.data, weight=1.0)
    one.load_state_dict(m.state_dict())
    one.eval()
    one.set_epoch(40)
    with torch.no_grad():
        _, ones = one(cifar.images, cifar.targets, cifar.indices)
    assert terms["reviewkd"].item() == pytest.approx(5.0 * ones["reviewkd"].item(), rel=1e-6)
    root = Path(__file__).resolve().parent.parent / "configs"
    for path in (root / "cifar100" / "reviewkd_resnet32x4_resnet8x4.yaml", root / "fashion_mnist" / "reviewkd.yaml"):
        assert yaml.safe_load(path.read_text())["method"]["weight"] == 5.0, path


def test_prokt_default_teacher_pull_is_the_plain_kl_at_every_temperature():
    """lam defaults to 1/T^2: one teacher step equals torch SGD on CE + KL(p_t^T || p_s^T) (no T^2)."""
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 10), create_model("resnet14", 10)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    for temperature in (4.0, 8.0):
        params = get_method("prokt").Params(temperature=temperature)
        assert params.lam == pytest.approx(1 / temperature**2)
        assert get_method("prokt").Params(temperature=temperature, lam=1.0).lam == 1.0  # explicit value kept
        m = get_method("prokt")(copy.deepcopy(student), copy.deepcopy(teacher), params)
        m.setup(images, None)
        ref_student, ref_teacher = copy.deepcopy(student).train(), copy.deepcopy(teacher).train()
        opt = torch.optim.SGD(ref_teacher.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        with torch.no_grad():
            s = ref_student(images)
        z = ref_teacher(images)
        log_p_t, log_p_s = F.log_softmax(z / temperature, 1), F.log_softmax(s / temperature, 1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()
        (F.cross_entropy(z, targets) + kl).backward()
        opt.step()
        m.train()
        m(images, targets)
        for a, b in zip(m.moving_teacher.parameters(), ref_teacher.parameters()):
            assert torch.allclose(a, b, atol=1e-6)
