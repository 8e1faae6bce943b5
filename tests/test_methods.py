"""The Distiller contract: named loss terms, a frozen teacher, registry."""
import pytest
import torch
from torch import nn

from softlabels.errors import UserError
from softlabels.losses import kd_loss, wsl_soft_loss
from softlabels.methods import get_method, list_methods


class Tiny(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5))
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.body(x))


def make(name, **params):
    torch.manual_seed(0)
    cls = get_method(name)
    teacher = Tiny() if cls.requires_teacher else None
    return cls(Tiny(), teacher, cls.Params(**params))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 2, 2, generator=g), torch.randint(0, 5, (8,), generator=g)


def test_registry_lists_foundation_methods():
    assert {"ce", "kd", "wsl"} <= set(list_methods())
    with pytest.raises(UserError, match="unknown method"):
        get_method("nope")


@pytest.mark.parametrize("name,terms", [("ce", {"ce"}), ("kd", {"ce", "kd"}), ("wsl", {"ce", "wsl"})])
def test_forward_returns_logits_and_named_terms(name, terms):
    m = make(name)
    x, y = batch()
    logits, losses = m(x, y)
    assert logits.shape == (8, 5)
    assert set(losses) == terms
    assert all(v.dim() == 0 and v.dtype == torch.float32 for v in losses.values())


def test_kd_and_wsl_terms_match_the_losses():
    x, y = batch()
    kd = make("kd", temperature=2.0, ce_weight=0.3, kd_weight=0.7)
    kd.eval()
    logits, losses = kd(x, y)
    t = kd.teacher(x)
    assert losses["kd"].item() == pytest.approx(0.7 * kd_loss(logits, t, 2.0).item(), rel=1e-6)
    wsl = make("wsl", temperature=3.0, alpha=2.0)
    wsl.eval()
    logits, losses = wsl(x, y)
    t = wsl.teacher(x)
    assert losses["wsl"].item() == pytest.approx(2.0 * wsl_soft_loss(logits, t, y, 3.0).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["kd", "wsl"])
def test_teacher_frozen_and_outside_optimizer(name):
    m = make(name)
    m.train()
    assert not m.teacher.training and m.student.training
    assert all(not p.requires_grad for p in m.teacher.parameters())
    teacher_ids = {id(p) for p in m.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in m.trainable_parameters()}
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    x, y = batch()
    _, losses = m(x, y)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    for k, v in m.teacher.state_dict().items():  # BN running stats untouched in eval mode
        assert torch.equal(v, before[k]), k


def test_teacher_train_mode_is_opt_in():
    cls = get_method("wsl")
    m = cls(Tiny(), Tiny(), cls.Params(), teacher_train_mode=True)
    m.train()
    assert m.teacher.training
    assert all(not p.requires_grad for p in m.teacher.parameters())
    m.eval()
    assert not m.teacher.training


def test_wsl_weighting_none_equals_kd_with_soft_ce_gradient():
    """WSL with w = 1 and KL form is KD with CE weight 1 and KL weight alpha."""
    x, y = batch()
    wsl = make("wsl", weighting="none", form="kl", alpha=0.9, ce_weight=0.1, temperature=4.0)
    kd = make("kd", temperature=4.0, ce_weight=0.1, kd_weight=0.9)
    kd.student.load_state_dict(wsl.student.state_dict())
    kd.teacher.load_state_dict(wsl.teacher.state_dict())
    wsl.eval()
    kd.eval()
    a = sum(wsl(x, y)[1].values())
    b = sum(kd(x, y)[1].values())
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
