"""DFA: aggregation weights, architecture step (alpha only, held-out data), frozen alpha in stage 2, end to end."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

from softlabels.errors import ConfigError
from softlabels.methods import get_method
from softlabels.methods.dfa import aggregate, frozen_bn_stats, stage_candidates
from softlabels.models import create_model


def _make(teacher: str = "resnet14", data=None, **params):
    torch.manual_seed(0)
    cls = get_method("dfa")
    method = cls(create_model("resnet8", 4, 3), create_model(teacher, 4, 3), cls.Params(**params))
    images, _ = _batch()
    method.setup(images, data)
    return method


def _batch(n: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


def _alphas(method) -> list[torch.Tensor]:
    return [a.detach().clone() for a in method.arch.alpha]


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_candidates_weights_sum_to_one_and_aggregate():
    method = _make()
    assert method.candidates == [[f"layer{k}.0", f"layer{k}.1"] for k in (1, 2, 3)]
    assert method.candidates_pre == [[f"layer{k}.0.preact", f"layer{k}.1.preact"] for k in (1, 2, 3)]
    with torch.no_grad():
        for a in method.arch.alpha:
            a.copy_(torch.randn(a.shape) * 3)
    for mode in ("softmax", "argmax"):
        for w in method.arch.weights(mode):
            assert torch.all(w >= 0) and torch.allclose(w.sum(), torch.tensor(1.0))
    soft = method.arch.weights("softmax")
    assert all(torch.allclose(w, torch.softmax(a.detach(), 0)) for w, a in zip(soft, method.arch.alpha))
    # the aggregation is the weighted sum of the teacher's block outputs of the stage
    images, _ = _batch()
    _, t_feats = method.sample_features(images)
    f0, f1 = t_feats["module:layer2.0"], t_feats["module:layer2.1"]
    w = soft[1]
    assert torch.allclose(aggregate([f0, f1], w), w[0] * f0 + w[1] * f1)
    assert not torch.allclose(aggregate([f0, f1], w), f1)
    # one block per stage (resnet8 teacher): one candidate of weight 1
    single = _make(teacher="resnet8")
    assert [len(c) for c in single.candidates] == [1, 1, 1]
    assert single.aggregation_weights() == [[1.0], [1.0], [1.0]]


def test_stage_candidates_of_other_zoo_models():
    wrn = create_model("wrn_16_2", 4, 3)
    assert stage_candidates(wrn, "stage2") == ["block2.layer.0", "block2.layer.1"]
    vgg = create_model("vgg8", 4, 3)
    assert stage_candidates(vgg, "stage1") == ["relu1"]  # no blocks: the stage itself
    with pytest.warns(UserWarning, match="no pre-ReLU"):
        method = _make(teacher="wrn_16_2")
    assert method.candidates[-1] == ["block3.layer.0", "block3.layer.1"]
    images, targets = _batch()
    method.train()
    method.set_epoch(0)
    before = _alphas(method)
    _, terms = method(images, targets)
    assert set(terms) == {"ce", "dfa", "bridge"} and all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, method.arch.alpha))


def test_alpha_learns_only_in_the_search_and_never_in_the_student_optimizer():
    method = _make(init_epochs=1, arch_lr=0.05)
    alpha_ids = {id(a) for a in method.arch.alpha}
    assert not alpha_ids & {id(p) for p in method.trainable_parameters()}
    assert all(not a.requires_grad for a in method.arch.alpha)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.05)
    teacher_before = _state(method.teacher)
    images, targets = _batch()
    method.train()
    # ---- stage 1: the forward pass takes an architecture step, the trainer's step leaves alpha alone
    method.set_epoch(0)
    before = _alphas(method)
    _, terms = method(images, targets)
    assert set(terms) == {"ce", "dfa", "bridge"}
    after_arch = _alphas(method)
    assert all(not torch.equal(a, b) for a, b in zip(before, after_arch))
    assert all(g.abs().sum() > 0 for g in method.last_arch_grads)
    opt.zero_grad()
    sum(terms.values()).backward()
    opt.step()
    assert all(a.grad is None for a in method.arch.alpha)
    assert all(torch.equal(a, b) for a, b in zip(after_arch, method.arch.alpha))
    assert _arch_steps(method) == 1
    # ---- stage 2: alpha frozen
    method.set_epoch(1)
    frozen = _alphas(method)
    for _ in range(2):
        _, terms = method(images, targets)
        assert set(terms) == {"ce", "dfa"}
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(frozen, method.arch.alpha))
    assert all(a.grad is None for a in method.arch.alpha) and _arch_steps(method) == 1
    # the stage-2 loss does not even depend on alpha (weights detached)
    for a in method.arch.alpha:
        a.requires_grad_(True)
    _, terms = method(images, targets)
    grads = torch.autograd.grad(sum(terms.values()), list(method.arch.alpha), allow_unused=True)
    assert all(g is None for g in grads)
    for a in method.arch.alpha:
        a.requires_grad_(False)
    # the teacher never changes (weights and BN statistics) and never gets gradients
    assert _same(teacher_before, _state(method.teacher))
    assert all(p.grad is None for p in method.teacher.parameters())
    # no architecture step in eval mode
    method.eval()
    method.set_epoch(0)
    method(images, targets)
    assert _arch_steps(method) == 1


def test_bridge_paths_pull_on_different_alphas():
    """student -> teacher of stage i moves alpha_{>i} (the later teacher stages are aggregated);
    teacher -> student of stage i moves alpha_i."""
    method = _make()
    method.train()
    images, targets = _batch()
    s_stage, t_cands = method._plain_features(images)
    alphas = list(method.arch.alpha)
    for a in alphas:
        a.requires_grad_(True)
    with frozen_bn_stats(method):
        st, ts = method.bridge_paths(images, targets, s_stage, t_cands, method.arch.weights())
    assert len(st) == len(ts) == 3

    def moved(loss):
        grads = torch.autograd.grad(loss, alphas, allow_unused=True, retain_graph=True)
        return [g is not None and bool(g.abs().sum() > 0) for g in grads]

    assert moved(st[0]) == [False, True, True]
    assert moved(st[1]) == [False, False, True]
    assert not st[2].requires_grad or moved(st[2]) == [False, False, False]
    assert moved(ts[0]) == [True, False, False]
    assert moved(ts[2]) == [False, False, True]


def test_architecture_step_touches_only_alpha():
    method = _make(arch_lr=0.1)
    method.train()
    student, teacher, aux = _state(method.student), _state(method.teacher), _state(method.auxiliary)
    images, targets = _batch()
    before = _alphas(method)
    loss = method.architecture_step(images, targets)
    assert torch.isfinite(loss)
    assert _same(student, _state(method.student))  # incl. BatchNorm running statistics
    assert _same(teacher, _state(method.teacher))
    changed = {k for k, v in _state(method.auxiliary).items() if not torch.equal(v, aux[k])}
    assert changed and all(k.startswith("arch.") for k in changed)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.arch.alpha))
    assert all(p.grad is None for p in method.parameters())


def _arch_steps(method) -> int:
    """Adam steps taken by alpha's optimizer (0 before the first)."""
    state = method.arch_optimizer.state.get(method.arch.alpha[0], {})
    return int(state["step"]) if "step" in state else 0


def test_arch_optimizer_is_torch_adam_configured_for_the_trainer_and_round_trips():
    from softlabels.config import OptimConfig

    method = _make(arch_lr=0.05, init_epochs=1)
    specs = method.configure_optimizers(OptimConfig(), 0.1)
    assert set(specs) == {"main", "arch"}
    arch = specs["arch"]
    assert isinstance(arch.optimizer, torch.optim.Adam) and arch.optimizer is method.arch_optimizer
    assert arch.stepped_by == "method" and arch.lr_rule == "constant"
    group = arch.optimizer.param_groups[0]
    assert group["lr"] == 0.05 and group["betas"] == (0.5, 0.999) and group["weight_decay"] == 1e-3
    assert {id(a) for a in method.arch.alpha} == {id(p) for p in group["params"]}
    images, targets = _batch()
    method.train()
    before = [a.detach().clone() for a in method.arch.alpha]
    method.architecture_step(images, targets)
    # the step equals torch Adam fed the step's gradient by hand
    ref_alpha = [torch.nn.Parameter(b) for b in before]
    ref = torch.optim.Adam(ref_alpha, lr=0.05, betas=(0.5, 0.999), weight_decay=1e-3, eps=1e-8)
    for p, g in zip(ref_alpha, method.last_arch_grads):
        p.grad = g.clone()
    ref.step()
    assert all(torch.equal(a, p) for a, p in zip(method.arch.alpha, ref_alpha))
    assert all(a.grad is None for a in method.arch.alpha)
    # the optimizer state (moments, step) restores into a fresh method: identical next step
    fresh = _make(arch_lr=0.05, init_epochs=1)
    fresh.auxiliary.load_state_dict(method.auxiliary.state_dict())
    fresh.student.load_state_dict(method.student.state_dict())
    fresh.arch_optimizer.load_state_dict(copy.deepcopy(method.arch_optimizer.state_dict()))
    fresh.train()
    method.architecture_step(images, targets)
    fresh.architecture_step(images, targets)
    assert _arch_steps(fresh) == 2
    assert all(torch.equal(a, b) for a, b in zip(method.arch.alpha, fresh.arch.alpha))


def test_held_out_part_of_the_batch_and_validation_split():
    images, targets = _batch()
    # search_split batch: the last quarter is held out, the weight step's terms see the first 12 rows only
    method = _make(search_split="batch", holdout_fraction=0.25, init_epochs=1)
    method.train()
    method.set_epoch(0)
    logits, terms = method(images, targets)
    assert logits.shape == (16, 4) and _arch_steps(method) == 1
    assert torch.allclose(terms["ce"], F.cross_entropy(logits[:12], targets[:12]))
    # search_split auto with a validation split: the held-out images come from it, the whole batch trains
    val_images, val_targets = _batch(20, seed=5)
    data = SimpleNamespace(val=[(val_images, val_targets, torch.arange(20))])
    method = _make(data=data, init_epochs=1)
    method.train()
    method.set_epoch(0)
    seen = []
    original = method.architecture_step

    def spy(x, y, *rest):
        seen.append(y.clone())
        return original(x, y, *rest)

    method.architecture_step = spy
    for _ in range(3):
        logits, terms = method(images, targets)
    assert torch.allclose(terms["ce"], F.cross_entropy(logits, targets))
    # chunks of the training batch size, cycling the split in order (the 4-image tail is a chunk too)
    assert [len(y) for y in seen] == [16, 4, 16]
    assert torch.equal(seen[0], val_targets[:16]) and torch.equal(seen[2], val_targets[:16])
    method.set_epoch(0)  # every epoch restarts the order
    method(images, targets)
    assert torch.equal(seen[3], val_targets[:16])
    with pytest.raises(ConfigError, match="validation split"):
        _make(search_split="val", init_epochs=1)


def test_alpha_init_argmax_and_validation():
    method = _make(alpha_init=[[0.0, 2.0], [1.0, -1.0], [0.5, 0.5]], aggregation="argmax")
    assert [a.tolist() for a in method.arch.alpha] == [[0.0, 2.0], [1.0, -1.0], [0.5, 0.5]]
    assert method.aggregation_weights() == [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
    with pytest.raises(ConfigError, match="alpha_init"):
        _make(alpha_init=[[0.0, 1.0]])
    with pytest.raises(ValueError):
        get_method("dfa").Params(connector_kernel=2)


def test_under_autocast():
    method = _make(init_epochs=1)
    method.train()
    method.set_epoch(0)
    images, targets = _batch()
    before = _alphas(method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, terms = method(images, targets)
    sum(t.float() for t in terms.values()).backward()
    assert all(torch.isfinite(v) for v in terms.values())
    assert all(a.dtype == torch.float32 for a in method.arch.alpha)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.arch.alpha))


@pytest.fixture(scope="module")
def resnet14_teacher(tmp_path_factory):
    """A resnet14 teacher (two blocks per stage) trained one epoch on the tiny synthetic data."""
    from conftest import tiny_experiment
    from softlabels.config import validate_config
    from softlabels.engine import train

    root = tmp_path_factory.mktemp("dfa_teacher")
    cfg = tiny_experiment(root, name="teacher", epochs=1)
    cfg["student"] = {"name": "resnet14"}
    train(validate_config(cfg))
    return root / "teacher" / "best.pt"


def _dfa_config(tiny, tmp_path, teacher_ckpt, name, epochs):
    cfg = tiny(tmp_path, name=name, epochs=epochs, teacher={"name": "resnet14", "checkpoint": str(teacher_ckpt)},
               method={"name": "dfa", "init_epochs": 1, "arch_lr": 0.05})
    cfg["data"]["val_split"] = 0.25
    cfg["schedule"] = {"name": "constant", "epochs": epochs}
    return cfg


def test_end_to_end_search_then_distill_and_exact_resume(tmp_path, tiny, resnet14_teacher, capfd):
    from softlabels.config import validate_config
    from softlabels.engine import checkpoint as ckpt_io
    from softlabels.engine.trainer import Trainer

    trainer = Trainer(validate_config(_dfa_config(tiny, tmp_path, resnet14_teacher, "dfa", 2)))
    opt_ids = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not opt_ids & {id(a) for a in trainer.method.arch.alpha}
    summary = trainer.fit()
    assert summary["epochs"] == 3 and summary["total_epochs"] == 3
    rows = [json.loads(line) for line in (tmp_path / "dfa" / "metrics.jsonl").read_text().splitlines()]
    assert "train_loss_bridge" in rows[0] and "train_loss_bridge" not in rows[1]
    assert "dfa_arch_bridge" in rows[0] and "dfa_arch_bridge" not in rows[1]
    stages = ("stage1", "stage2", "stage3")
    weights = [[[r[f"dfa_{s}_w{k}"] for k in range(2)] for s in stages] for r in rows]
    for per_row in weights:
        for w in per_row:
            assert sum(w) == pytest.approx(1.0, abs=1e-6)
    assert any(abs(w[0] - 0.5) > 1e-3 for w in weights[0])  # the search moved the weights
    assert weights[0] == weights[1] == weights[2]  # frozen while distilling
    last = ckpt_io.load_checkpoint(tmp_path / "dfa" / "last.pt")
    for i, w in enumerate(weights[-1]):
        assert torch.allclose(torch.softmax(last["auxiliary"][f"arch.alpha.{i}"], 0), torch.tensor(w))
    saved = json.loads((tmp_path / "dfa" / "dfa_alpha.json").read_text())  # alpha in the run folder
    assert saved["phase"] == "distill" and list(saved["stages"]) == list(stages)
    for i, s in enumerate(stages):
        assert saved["stages"][s]["weights"] == pytest.approx(weights[-1][i])
        assert saved["stages"][s]["alpha"] == pytest.approx(last["auxiliary"][f"arch.alpha.{i}"].tolist())
    err = capfd.readouterr().err
    assert "DFA search epoch 1/1" in err and "DFA distilling with aggregation" in err
    # interrupted after the first distillation epoch and resumed: identical to the uninterrupted run
    cut = _dfa_config(tiny, tmp_path, resnet14_teacher, "cut", 1)
    Trainer(validate_config(cut)).fit()
    resumed = Trainer(validate_config(_dfa_config(tiny, tmp_path, resnet14_teacher, "cut", 2)),
                      run_dir=tmp_path / "cut", resume=True)
    resumed.fit()
    again = ckpt_io.load_checkpoint(tmp_path / "cut" / "last.pt")
    for key in ("model", "auxiliary"):
        assert _same(last[key], again[key]), key


def test_shipped_config_validates():
    from softlabels.config import method_params, validate_config

    path = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist" / "dfa.yaml"
    exp = validate_config(yaml.safe_load(path.read_text()), str(path))
    assert exp.method.name == "dfa" and exp.teacher.name == "resnet20" and exp.student.name == "resnet8"
    params = method_params(exp)
    assert params.init_epochs == 3 and params.weight == 1e-3
