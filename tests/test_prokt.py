"""ProKT: the moving teacher trains with its own SGD, the student follows, checkpoints round-trip."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from softlabels.config import OptimConfig
from softlabels.errors import ConfigError
from softlabels.methods import get_method
from softlabels.models import create_model


def _make(**params):
    torch.manual_seed(0)
    student = create_model("resnet8", 4, 3)
    teacher = create_model("resnet8", 4, 3)
    cls = get_method("prokt")
    return cls(student, teacher, cls.Params(**params))


def _batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_registered_with_terms():
    method = _make()
    images, targets = _batch()
    method.train()
    logits, terms = method(images, targets)
    assert logits.shape == (16, 4) and set(terms) == {"ce", "kd"}
    _, terms = _make(weighting="wsl")(images, targets)
    assert set(terms) == {"ce", "wsl"}


def test_teacher_moves_original_frozen_student_optimizer_excludes_it():
    method = _make(teacher_lr=0.05)
    original = copy.deepcopy(method.teacher.state_dict())
    moving_before = [p.clone() for p in method.moving_teacher.parameters()]
    trainable = {id(p) for p in method.trainable_parameters()}
    assert not trainable & {id(p) for p in method.moving_teacher.parameters()}
    assert not trainable & {id(p) for p in method.teacher.parameters()}
    assert {id(p) for p in method.student.parameters()} <= trainable
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    images, targets = _batch()
    method.train()
    _, terms = method(images, targets)
    opt.zero_grad()
    sum(terms.values()).backward()
    opt.step()
    moved = [not torch.equal(a, b) for a, b in zip(moving_before, method.moving_teacher.parameters())]
    assert any(moved)
    assert all(p.grad is None for p in method.moving_teacher.parameters())
    assert all(not p.requires_grad for p in method.moving_teacher.parameters())
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, original[k]), k
    first = next(method.moving_teacher.parameters())
    assert method.teacher_optimizer.state[first]["momentum_buffer"].abs().sum() > 0
    diag = method.diagnostics()
    assert diag["prokt_teacher_drift"] > 0 and "prokt_teacher_kl" in diag


def test_no_update_in_eval_mode_or_with_zero_steps():
    images, targets = _batch()
    for method, train in ((_make(), False), (_make(teacher_steps=0), True)):
        before = [p.clone() for p in method.moving_teacher.parameters()]
        method.train(train)
        method(images, targets)
        assert all(torch.equal(a, b) for a, b in zip(before, method.moving_teacher.parameters()))


def test_student_follows_the_updated_teacher():
    method = _make(teacher_lr=0.01, ce_weight=0.0, kd_weight=1.0)
    images, targets = _batch(32)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9)
    method.train()
    kls = []
    for _ in range(12):
        _, terms = method(images, targets)
        opt.zero_grad()
        terms["kd"].backward()
        opt.step()
        with torch.no_grad():
            method.student.eval()
            s = method.student(images)
            method.student.train()
            t = method.moving_teacher_logits(images)
            kls.append(float(F.kl_div(F.log_softmax(s / 4, 1), F.log_softmax(t / 4, 1), log_target=True,
                                      reduction="batchmean")))
    assert kls[-1] < kls[0]


def test_teacher_update_matches_torch_sgd():
    method = _make(teacher_lr=0.02, teacher_nesterov=True, lam=1.0)  # teacher loss CE + 16 KL below
    ref = copy.deepcopy(method.moving_teacher)
    ref.train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4, nesterov=True)
    images, targets = _batch()
    with torch.no_grad():
        s = method.student.eval()(images)
    for _ in range(3):
        method._teacher_update(images, targets, s)
        ref.requires_grad_(True)
        z = ref(images)
        log_p_t, log_p_s = F.log_softmax(z / 4, 1), F.log_softmax(s / 4, 1)
        loss = F.cross_entropy(z, targets) + 16 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a, b in zip(method.moving_teacher.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_auxiliary_state_round_trips_teacher_and_momentum():
    method = _make()
    images, targets = _batch()
    method.train()
    method(images, targets)
    state = copy.deepcopy(method.auxiliary.state_dict())
    assert any(k.startswith("teacher.") for k in state)
    specs = method.configure_optimizers(OptimConfig(), 0.1)
    assert set(specs) == {"main", "teacher"} and specs["teacher"].optimizer is method.teacher_optimizer
    assert specs["teacher"].stepped_by == "method" and specs["teacher"].lr_rule == "constant"
    opt_state = copy.deepcopy(method.teacher_optimizer.state_dict())
    assert len(opt_state["state"]) == len(list(method.moving_teacher.parameters()))  # momentum of every tensor
    fresh = _make()
    fresh.auxiliary.load_state_dict(state)
    fresh.teacher_optimizer.load_state_dict(opt_state)
    for k, v in fresh.auxiliary.state_dict().items():
        assert torch.equal(v, state[k]), k
    # identical next step from the restored state
    fresh.student.load_state_dict(method.student.state_dict())
    fresh.train()
    method(images, targets)
    fresh(images, targets)
    for a, b in zip(method.moving_teacher.parameters(), fresh.moving_teacher.parameters()):
        assert torch.equal(a, b)


def test_end_to_end_train_and_resume(tmp_path, tiny, tiny_teacher):
    from softlabels.config import validate_config
    from softlabels.engine import checkpoint as ckpt_io
    from softlabels.engine import train
    from softlabels.engine.trainer import Trainer

    teacher = {"name": "resnet8", "checkpoint": str(tiny_teacher)}
    cfg = tiny(tmp_path, name="prokt", method={"name": "prokt", "teacher_lr": 0.01}, teacher=teacher, epochs=2)
    exp = validate_config(cfg)
    trainer = Trainer(exp)
    opt_ids = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not opt_ids & {id(p) for p in trainer.method.moving_teacher.parameters()}
    summary = trainer.fit()
    assert summary["epochs"] == 2
    last = ckpt_io.load_checkpoint(tmp_path / "prokt" / "last.pt")
    assert len(last["optimizers"]["teacher"]["state"]) > 0  # the teacher SGD's momentum is checkpointed
    original = ckpt_io.load_checkpoint(tiny_teacher)["model"]
    key = next(k for k in original if k.endswith("weight") and original[k].dim() == 4)
    assert not torch.equal(last["auxiliary"][f"teacher.{key}"], original[key])
    # resume for one more epoch: the moving teacher comes back from auxiliary
    cfg2 = dict(cfg, schedule={"name": "multistep", "epochs": 3, "milestones": [2]})
    resumed = Trainer(validate_config(cfg2), run_dir=tmp_path / "prokt", resume=True)
    for k, v in resumed.method.auxiliary.state_dict().items():
        assert torch.equal(v, last["auxiliary"][k]), k
    restored = resumed.optimizers["teacher"].state_dict()["state"]
    for i, entry in last["optimizers"]["teacher"]["state"].items():
        assert torch.equal(restored[i]["momentum_buffer"], entry["momentum_buffer"]), i
    assert resumed.fit()["epochs"] == 3
    with pytest.raises(ConfigError, match="teacher.cache"):
        train(validate_config(tiny(tmp_path, name="cached", method={"name": "prokt"},
                                   teacher=dict(teacher, cache=True), epochs=1)))


def test_under_autocast_and_in_a_combination():
    method = _make()
    images, targets = _batch()
    method.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, terms = method(images, targets)
    sum(t.float() for t in terms.values()).backward()
    assert all(p.dtype == torch.float32 and p.grad is None for p in method.moving_teacher.parameters())
    torch.manual_seed(0)
    cls = get_method("prokt+at")
    combo = cls(create_model("resnet8", 4, 3), create_model("resnet8", 4, 3))
    combo.setup(images)
    before = [p.clone() for p in combo.auxiliary.parameters()]
    combo.train()
    _, terms = combo(images, targets)
    assert {"ce", "kd"} <= set(terms)
    assert any(not torch.equal(a, b) for a, b in zip(before, combo.auxiliary.parameters()))
    assert not {id(p) for p in combo.trainable_parameters()} & {id(p) for p in combo.auxiliary.parameters()}
