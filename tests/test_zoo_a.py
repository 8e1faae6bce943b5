"""Method zoo, part A: FitNet, AT, SP, CC, VID, RKD, PKT, NST, DKD, DIST, Tf-KD and combinations.

(1) losses: hand-checked answers and stored regression values (``tests/fixtures/zoo_a_reference.json``,
    written once by ``python tests/test_zoo_a.py --write-reference``);
(2) one training step of every method (and fitnet+wsl, at+kd, crd+kd) on resnet32x4 -> resnet8x4 with
    CIFAR-shaped data: finite loss, gradients reach the student and the auxiliary modules, teacher unchanged;
(3) auxiliary modules round-trip through ``auxiliary.state_dict()``;
(4) the registry and the combination rules (one forward pass, CE once, prefixes, init phases);
(5) Fashion-MNIST-shaped (1x28x28) resnet20 -> resnet8 for every method; one real Trainer run + resume.
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
from softlabels.errors import ConfigError, UserError
from softlabels.losses import kd_loss
from softlabels.methods import get_method, list_methods
from softlabels.methods._feature_utils import ConvReg, match_spatial, paired_stages
from softlabels.methods.at import at_loss, attention_map
from softlabels.methods.base import Batch
from softlabels.methods.cc import cc_gaussian_loss, cc_loss, gaussian_correlation
from softlabels.methods.combined import make_combined
from softlabels.methods.dist import dist_loss, inter_class_relation, intra_class_relation, pearson
from softlabels.methods.dkd import dkd_loss, dkd_parts, warmup_factor
from softlabels.methods.fitnet import hint_loss
from softlabels.methods.nst import nst_loss
from softlabels.methods.pkt import conditional_probabilities, pkt_loss
from softlabels.methods.rkd import (
    normalized_distances,
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    triplet_angles,
)
from softlabels.methods.sp import similarity_matrix, sp_loss
from softlabels.methods.tfkd import tf_kd_loss, virtual_teacher
from softlabels.methods.vid import VIDRegressor, vid_nll
from softlabels.models import create_model

FIXTURE = Path(__file__).parent / "fixtures" / "zoo_a_reference.json"
METHODS = ["fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "nst", "dkd", "dist", "tf_kd"]
TERM = {m: m for m in METHODS}
WITH_AUX = {"fitnet", "cc", "vid"}
COMBOS = {"fitnet+wsl": {"ce", "fitnet", "wsl"}, "at+kd": {"ce", "at", "kd"}, "crd+kd": {"ce", "crd", "kd"}}


# ----------------------------------------------------------------------------- helpers
def fake_data(labels: torch.Tensor, num_classes: int, seed: int = 0):
    """The parts of a DataBundle that setup() reads (CRD's memory bank)."""
    n = labels.numel()
    return SimpleNamespace(
        info=SimpleNamespace(full_train_size=n, num_classes=num_classes),
        train=SimpleNamespace(indices=torch.arange(n), dataset_labels=labels.clone(), seed=seed),
    )


def build(name, student, teacher, images, data=None, params=None):
    cls = get_method(name)
    p = cls.Params.model_validate(params or {})
    method = cls(copy.deepcopy(student), copy.deepcopy(teacher) if cls.requires_teacher else None, p)
    method.setup(images, data)
    return method


def grads(module) -> bool:
    """Whether any parameter of ``module`` received a non-zero gradient."""
    return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())


def logits_batch(student_logits, teacher_logits, targets, epoch=0):
    return Batch(images=torch.zeros(len(targets), 1), targets=targets, student_logits=student_logits,
                 teacher_logits=teacher_logits, epoch=epoch)


# ----------------------------------------------------------------------------- (1) known answers
def test_convreg_maps_every_shape_case():
    cases = [((2, 8, 8, 8), (2, 16, 4, 4)), ((2, 8, 4, 4), (2, 16, 8, 8)), ((2, 8, 4, 4), (2, 16, 4, 4)),
             ((2, 8, 7, 7), (2, 16, 4, 4)), ((2, 8, 3, 3), (2, 16, 7, 7)), ((2, 8), (2, 16))]
    for s_shape, t_shape in cases:
        reg = ConvReg(s_shape, t_shape)
        out = reg(torch.randn(*s_shape))
        assert out.shape == t_shape, (s_shape, t_shape)
        assert (out >= 0).all()  # ReLU by default
    assert not (ConvReg((2, 4, 4, 4), (2, 4, 4, 4), relu=False)(torch.randn(2, 4, 4, 4)) >= 0).all()
    with pytest.raises(ConfigError):
        ConvReg((2, 8), (2, 8, 4, 4))


def test_feature_helpers():
    a, b = match_spatial(torch.ones(1, 2, 8, 8), torch.ones(1, 3, 4, 4))
    assert a.shape == (1, 2, 4, 4) and b.shape == (1, 3, 4, 4)
    vgg, r8 = create_model("vgg8", 10), create_model("resnet8", 10)
    assert paired_stages(r8, vgg, "AT") == (["stage1", "stage2", "stage3"], ["stage2", "stage3", "stage4"])
    with pytest.raises(ConfigError, match="declares none"):
        paired_stages(torch.nn.Linear(2, 2), r8, "AT")


def test_fitnet_hint_loss_is_the_mse():
    s, t = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert hint_loss(s, t).item() == pytest.approx((1 + 4) / 2)
    assert hint_loss(t, t).item() == 0.0


def test_at_attention_map_by_hand():
    # two channels on a 1x2 map: channel means of squares (1 + 9) / 2 = 5 and (4 + 16) / 2 = 10
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    q = attention_map(f)
    assert q[0].tolist() == pytest.approx([5 / math.sqrt(125), 10 / math.sqrt(125)])
    g = torch.tensor([[[[2.0, 1.0]], [[4.0, 3.0]]]])  # positions swapped: Q = (10, 5) / sqrt(125)
    assert at_loss(f, g).item() == pytest.approx(((5 - 10) ** 2 * 2 / 125) / 2)
    assert at_loss(f, f * 3).item() == pytest.approx(0.0, abs=1e-12)  # scale invariant
    # the larger map is pooled: a constant 4x4 map equals the constant 2x2 map
    assert at_loss(torch.ones(1, 3, 4, 4), torch.ones(1, 5, 2, 2)).item() == pytest.approx(0.0, abs=1e-12)


def test_sp_two_by_two_by_hand():
    f_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # G = I
    f_t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # G = all ones -> rows (1, 1) / sqrt 2
    assert torch.allclose(similarity_matrix(f_t), torch.full((2, 2), 2**-0.5))
    expected = (2 * (2**-0.5 - 1) ** 2 + 2 * 0.5) / 4  # = 1 - sqrt(2) / 2
    assert sp_loss(f_s, f_t).item() == pytest.approx(expected)
    assert expected == pytest.approx(1 - math.sqrt(2) / 2)
    assert sp_loss(f_s.view(2, 2, 1, 1), f_s.view(2, 1, 2, 1) * 7).item() == pytest.approx(0.0, abs=1e-12)


def test_cc_forms_by_hand():
    e_s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # delta = e_s; consecutive products: (1*0 + 0*1) = 0 and (0*1 + 1*1) = 1 -> mean 0.5
    assert cc_loss(e_s, torch.zeros(3, 2)).item() == pytest.approx(0.5)
    assert cc_loss(e_s, e_s).item() == 0.0
    # a high-order Taylor expansion is the exact RBF kernel exp(-gamma |x - y|^2) on unit vectors
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    c = gaussian_correlation(u, gamma=0.4, order=30)
    exact = torch.exp(-0.4 * torch.cdist(u, u).pow(2))
    assert torch.allclose(c, exact, atol=1e-6)
    # order 2: orthogonal unit vectors only keep the p = 0 term exp(-2 gamma)
    assert gaussian_correlation(u, 0.4, 2)[0, 1].item() == pytest.approx(math.exp(-0.8))
    assert cc_gaussian_loss(u, u).item() == 0.0


def test_cc_embeddings_are_not_normalised_by_default_like_the_reference():
    """RepDistiller's LinearEmbed and torchdistill's Linear4CCKD: a plain linear layer; normalisation is opt-in."""
    from softlabels.methods.cc import CC, LinearEmbed

    assert CC.Params().normalize is False
    embed = LinearEmbed(2, 2)
    with torch.no_grad():
        embed.linear.weight.copy_(torch.eye(2))
        embed.linear.bias.zero_()
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]])
    assert torch.equal(embed(x), x)
    embed.normalize = True
    assert embed(x).flatten().tolist() == pytest.approx([0.6, 0.8, 0.0, 1.0, 2**-0.5, 2**-0.5])
    # the reference loss on these embeddings against a zero teacher embedding, by hand:
    # delta = x; consecutive products (3*0 + 4*2) = 8 and (0*1 + 2*1) = 2 -> mean 5
    assert cc_loss(x, torch.zeros(3, 2)).item() == pytest.approx(5.0)
    # ... and normalised: (0.6*0 + 0.8*1) = 0.8 and (0 + 1 * 2**-0.5) -> mean (0.8 + 0.7071) / 2
    assert cc_loss(F.normalize(x, dim=1), torch.zeros(3, 2)).item() == pytest.approx((0.8 + 2**-0.5) / 2)


def test_cc_method_term_uses_unnormalised_embeddings(cifar):
    for normalize in (False, True):
        m = build("cc", cifar.student, cifar.teacher, cifar.images[:4], params={"normalize": normalize})
        m.eval()
        with torch.no_grad():
            _, terms = m(cifar.images[:4], cifar.targets[:4])
        embed_s, embed_t = m.auxiliary["embed_s"], m.auxiliary["embed_t"]
        assert embed_s.normalize is normalize and embed_t.normalize is normalize
        # the term is beta * the independent formula on the (un)normalised embeddings of the same features
        feats_s, feats_t = m.sample_features(cifar.images[:4])
        e_s = embed_s.linear(feats_s["pooled"].flatten(1))
        e_t = embed_t.linear(feats_t["pooled"].flatten(1))
        if normalize:
            e_s, e_t = F.normalize(e_s, dim=1), F.normalize(e_t, dim=1)
        d = (e_s - e_t).abs()
        expected = 0.02 * sum((d[i] * d[i + 1]).sum() for i in range(3)) / 3
        assert terms["cc"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_cc_gaussian_distance_squared_is_the_paper_and_norm_is_torchdistill():
    """Two samples, orthogonal unit teacher embeddings, identical student ones, gamma 0.4, P 2, by hand."""
    e_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e_s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = math.exp(-0.8)  # exp(-2 gamma)
    k1 = c * (1 + 0.8 + 0.8**2 / 2)  # x.y = 1: the Taylor sum at P = 2
    # C_t = [[k1, c], [c, k1]], C_s = all k1: two off-diagonal differences of (k1 - c)
    sq = 2 * (k1 - c) ** 2
    assert cc_gaussian_loss(e_s, e_t).item() == pytest.approx(sq / 4, rel=1e-6)
    assert cc_gaussian_loss(e_s, e_t, distance="norm").item() == pytest.approx(math.sqrt(sq) / 4, rel=1e-6)
    # torchdistill's row-by-row construction: row_i = exp(-2g) (1 + sum_p (2g)^p / p! (x_i . X^T)^p)
    rows = [c * (1 + sum((0.8**p / math.factorial(p)) * (e_s[i] @ e_s.t()) ** p for p in (1, 2))) for i in range(2)]
    assert torch.allclose(gaussian_correlation(e_s), torch.stack(rows))


def test_vid_nll_and_initial_variance_by_hand():
    mean, target = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    assert vid_nll(mean, target, torch.tensor([1.0])).item() == pytest.approx(0.5)
    assert vid_nll(mean, target, torch.tensor([math.e])).item() == pytest.approx(0.5 * (1 / math.e + 1))
    reg = VIDRegressor(3, 4, 4, init_var=5.0, eps=1e-5)
    assert reg.variance().tolist() == pytest.approx([5.0] * 4, rel=1e-6)
    assert [m.bias for m in reg.mean if isinstance(m, torch.nn.Conv2d)] == [None] * 3
    # the regressor output equal to the target: only 0.5 log(var) remains
    s = torch.randn(2, 3, 4, 4)
    assert vid_nll(reg.mean(s), reg.mean(s), reg.variance()).item() == pytest.approx(0.5 * math.log(5.0), rel=1e-5)


def test_rkd_by_hand():
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # distances 1, 1, 2; mean 4/3
    tri = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # distances 1, 1, sqrt 2
    d = pairwise_distances(line)
    assert torch.allclose(d, torch.tensor([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]]), atol=1e-5)
    assert normalized_distances(line)[0].tolist() == pytest.approx([0, 0.75, 1.5], abs=1e-5)
    # distance loss: huber over the 9 entries; the pairs differ by 0.75 - 3/(2+sqrt2) etc.
    mu_t = (2 + math.sqrt(2)) * 2 / 6
    dt = [[0, 1 / mu_t, 1 / mu_t], [1 / mu_t, 0, math.sqrt(2) / mu_t], [1 / mu_t, math.sqrt(2) / mu_t, 0]]
    ds = [[0, 0.75, 1.5], [0.75, 0, 0.75], [1.5, 0.75, 0]]

    def huber(x):
        return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5

    expected_d = sum(huber(ds[i][j] - dt[i][j]) for i in range(3) for j in range(3)) / 9
    assert rkd_distance_loss(line, tri).item() == pytest.approx(expected_d, rel=1e-5)
    # angles at vertex 0 between (0->1) and (0->2): collinear (cos 1) vs right angle (cos 0)
    assert triplet_angles(line)[0 * 9 + 1 * 3 + 2].item() == pytest.approx(1.0)
    assert triplet_angles(tri)[0 * 9 + 1 * 3 + 2].item() == pytest.approx(0.0, abs=1e-6)
    # scale and translation invariance
    assert rkd_loss(tri, 3 * tri + 1).item() == pytest.approx(0.0, abs=1e-5)
    assert rkd_angle_loss(line, line).item() == 0.0
    # identical vectors in a batch: no NaN
    same = torch.ones(4, 3, requires_grad=True)
    loss = rkd_loss(same, torch.randn(4, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(same.grad).all()


def test_pkt_two_by_two_by_hand():
    f_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # kernel [[1, .5], [.5, 1]] -> rows (2/3, 1/3)
    f_t = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # kernel all ones -> rows (1/2, 1/2)
    assert torch.allclose(conditional_probabilities(f_s), torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]]))
    # mean over 4 entries of 0.5 log(0.5 / (2/3)) and 0.5 log(0.5 / (1/3)), twice each
    assert pkt_loss(f_s, f_t).item() == pytest.approx(math.log(1.125) / 4, rel=1e-5)
    assert pkt_loss(f_t, f_t).item() == pytest.approx(0.0, abs=1e-7)


def test_nst_by_hand():
    s = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    t = torch.tensor([0.0, 3.0]).view(1, 1, 1, 2)
    # k(s, s) = k(t, t) = 1, k(s, t) = 0 -> 1 + 1 - 0
    assert nst_loss(s, t).item() == pytest.approx(2.0)
    f = torch.rand(2, 4, 3, 3)
    assert nst_loss(f, f * 2).item() == pytest.approx(0.0, abs=1e-6)
    assert nst_loss(torch.rand(2, 4, 6, 6), torch.rand(2, 8, 3, 3)).dim() == 0  # channels/size may differ


def test_dkd_decomposes_kd():
    """The paper's identity: KD = TCKD + (1 - p_t(y)) NCKD, per sample at any T."""
    g = torch.Generator().manual_seed(0)
    for temperature in (1.0, 4.0):
        for _ in range(3):
            s, t = torch.randn(1, 7, generator=g) * 3, torch.randn(1, 7, generator=g) * 3
            y = torch.randint(0, 7, (1,), generator=g)
            tckd, nckd = dkd_parts(s, t, y, temperature)
            pt_y = F.softmax(t / temperature, 1)[0, y].item()
            assert kd_loss(s, t, temperature).item() == pytest.approx(tckd.item() + (1 - pt_y) * nckd.item(), rel=1e-5)
    z = torch.randn(3, 5, generator=g)
    assert dkd_loss(z, z, torch.tensor([0, 1, 2])).item() == pytest.approx(0.0, abs=1e-6)
    # binary part by hand: two classes, so NCKD is 0 and TCKD is the KL of the two-class softmaxes
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    tckd, nckd = dkd_parts(s, t, torch.tensor([0]), 1.0)
    assert tckd.item() == pytest.approx(0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert nckd.item() == pytest.approx(0.0, abs=1e-7)
    assert [warmup_factor(e, 20) for e in (0, 9, 19, 100)] == [1 / 20, 10 / 20, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_dist_by_hand():
    a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    assert pearson(a, b).item() == pytest.approx(-1.0)
    assert pearson(a, 2 * a + 5).item() == pytest.approx(1.0)
    assert inter_class_relation(a, b).item() == pytest.approx(2.0)
    assert intra_class_relation(a.t(), b.t()).item() == pytest.approx(2.0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 6, generator=g) * 8  # spread columns: the 1e-8 eps of rho is negligible
    assert dist_loss(z, z).item() == pytest.approx(0.0, abs=1e-3)
    # tau^2 (beta inter + gamma intra): only tau, beta and gamma scale it
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    base = dist_loss(s, t, 1.0, 0.0, 4.0).item()
    assert dist_loss(s, t, 2.0, 0.0, 4.0).item() == pytest.approx(2 * base, rel=1e-6)
    y_s, y_t = F.softmax(s / 4, 1), F.softmax(t / 4, 1)
    assert base == pytest.approx(16 * inter_class_relation(y_s, y_t).item(), rel=1e-6)


def test_tf_kd_virtual_teacher_and_both_forms_by_hand():
    p = virtual_teacher(torch.tensor([1, 0]), 5, 0.9)
    assert p.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert p[0].tolist() == pytest.approx([0.025, 0.9, 0.025, 0.025, 0.025])
    # official form, K = 2, T = 1, student logits 0: teacher softmax(0.9, 0.1), elementwise mean
    z, y = torch.zeros(1, 2), torch.tensor([0])
    q = [math.exp(0.9) / (math.exp(0.9) + math.exp(0.1)), math.exp(0.1) / (math.exp(0.9) + math.exp(0.1))]
    expected = sum(qi * math.log(qi / 0.5) for qi in q) / 2
    assert tf_kd_loss(z, y, 0.9, 1.0, "official").item() == pytest.approx(expected, rel=1e-6)
    # paper form: at T = 1 the virtual teacher is p_d itself; logits log p_d give zero
    logits = torch.log(virtual_teacher(y, 4, 0.7))
    assert tf_kd_loss(logits, y, 0.7, 1.0, "paper").item() == pytest.approx(0.0, abs=1e-6)
    expected = 0.7 * math.log(0.7 / 0.25) + 3 * 0.1 * math.log(0.1 / 0.25)
    assert tf_kd_loss(torch.zeros(1, 4), y, 0.7, 1.0, "paper").item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- (1b) regression fixture
def _reference_inputs():
    g = torch.Generator().manual_seed(2025)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "s_map": r(3, 4, 8, 8), "t_map": r(3, 6, 4, 4), "s_vec": r(5, 6), "t_vec": r(5, 9),
        "s_logits": r(5, 7) * 2, "t_logits": r(5, 7) * 2, "targets": torch.tensor([0, 3, 6, 3, 1]),
        "var": torch.rand(6, generator=g) + 0.5, "mean": r(3, 6, 4, 4),
    }


def reference_values() -> dict[str, float]:
    x = _reference_inputs()
    sm, tm, sv, tv = x["s_map"], x["t_map"], x["s_vec"], x["t_vec"]
    sl, tl, y = x["s_logits"], x["t_logits"], x["targets"]
    e_s, e_t = F.normalize(sv, dim=1), F.normalize(tv[:, :6], dim=1)
    return {
        "fitnet_mse": hint_loss(x["mean"], tm).item(),
        "at": at_loss(sm, tm).item(),
        "at_p3": at_loss(sm, tm, 3.0).item(),
        "sp": sp_loss(sm, tm).item(),
        "cc_repdistiller": cc_loss(e_s, e_t).item(),
        "cc_gaussian": cc_gaussian_loss(e_s, e_t).item(),
        "vid_nll": vid_nll(x["mean"], tm, x["var"]).item(),
        "rkd_distance": rkd_distance_loss(sv, tv).item(),
        "rkd_angle": rkd_angle_loss(sv, tv).item(),
        "rkd": rkd_loss(sv, tv).item(),
        "pkt": pkt_loss(sv, tv).item(),
        "nst": nst_loss(sm, tm).item(),
        "dkd_tckd": dkd_parts(sl, tl, y, 4.0)[0].item(),
        "dkd_nckd": dkd_parts(sl, tl, y, 4.0)[1].item(),
        "dkd": dkd_loss(sl, tl, y, 1.0, 8.0, 4.0).item(),
        "dist": dist_loss(sl, tl, 2.0, 2.0, 4.0).item(),
        "tf_kd_official": tf_kd_loss(sl, y, 0.9, 20.0, "official").item(),
        "tf_kd_paper": tf_kd_loss(sl, y, 0.9, 4.0, "paper").item(),
    }


def write_reference() -> None:
    regression.write_reference(FIXTURE, reference_values())


def test_losses_match_stored_reference_values():
    regression.assert_matches_reference(FIXTURE, reference_values())


def test_losses_run_in_float32_under_half_inputs():
    x = _reference_inputs()
    sm, tm = x["s_map"].bfloat16(), x["t_map"].bfloat16()
    for value in (at_loss(sm, tm), sp_loss(sm, tm), nst_loss(sm, tm),
                  dkd_loss(x["s_logits"].bfloat16(), x["t_logits"].bfloat16(), x["targets"]),
                  dist_loss(x["s_logits"].half(), x["t_logits"].half()), pkt_loss(x["s_vec"].half(), x["t_vec"].half())):
        assert value.dtype == torch.float32 and torch.isfinite(value)


def test_losses_ignore_autocast():
    """Under bf16 autocast the Gram/kernel/distance matmuls would run in bf16 (RKD and PKT are then far off)."""
    x = _reference_inputs()
    sm, tm, sv, tv = x["s_map"], x["t_map"], x["s_vec"], x["t_vec"]
    e_s, e_t = F.normalize(sv, dim=1), F.normalize(tv[:, :6], dim=1)
    fns = {"sp": lambda: sp_loss(sm, tm), "nst": lambda: nst_loss(sm, tm), "at": lambda: at_loss(sm, tm),
           "pkt": lambda: pkt_loss(sv, tv), "rkd": lambda: rkd_loss(sv, tv),
           "cc": lambda: cc_gaussian_loss(e_s, e_t)}
    for name, fn in fns.items():
        plain = fn()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = fn()
        assert auto.dtype == torch.float32 and auto.item() == pytest.approx(plain.item(), rel=1e-5), name


# ----------------------------------------------------------------------------- (2) CIFAR-shaped step
@pytest.fixture(scope="module")
def cifar():
    """resnet32x4 teacher and resnet8x4 student (built once), a CIFAR-shaped batch and a fake training set."""
    torch.manual_seed(0)
    teacher, student = create_model("resnet32x4", 100), create_model("resnet8x4", 100)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=g)
    targets = torch.tensor([3, 17, 3, 99])
    labels = torch.randint(0, 100, (300,), generator=g)
    labels[:4] = targets
    return SimpleNamespace(teacher=teacher, student=student, images=images, targets=targets,
                           indices=torch.arange(4), data=fake_data(labels, 100))


@pytest.mark.parametrize("name", METHODS + list(COMBOS))
def test_one_training_step_on_resnet32x4_to_resnet8x4(cifar, name):
    params = {"crd": {"nce_k": 64}} if name == "crd+kd" else {}
    m = build(name, cifar.student, cifar.teacher, cifar.images, cifar.data, params)
    teacher_before = {k: v.clone() for k, v in m.teacher.state_dict().items()} if m.teacher is not None else {}
    m.set_epoch(0)
    m.train()
    logits, terms = m(cifar.images, cifar.targets, cifar.indices)
    assert logits.shape == (4, 100)
    assert set(terms) == COMBOS.get(name, {"ce", TERM.get(name, name)})
    assert all(v.dtype == torch.float32 and v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    assert all(v.item() > 0 for v in terms.values())
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.01)
    opt.zero_grad()
    sum(terms.values()).backward()
    assert grads(m.student)
    aux = list(m.auxiliary.parameters())
    if name in WITH_AUX or name in ("fitnet+wsl", "crd+kd"):
        assert aux and all(p.grad is not None and torch.isfinite(p.grad).all() for p in aux)
    else:
        assert not aux
    trainable = {id(p) for p in m.trainable_parameters()}
    assert trainable == {id(p) for p in m.student.parameters()} | {id(p) for p in aux}
    student_before = [p.clone() for p in m.student.parameters()]
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(student_before, m.student.parameters()))
    if m.teacher is not None:
        assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())
        assert not m.teacher.training
        for k, v in m.teacher.state_dict().items():
            assert torch.equal(v, teacher_before[k]), k


def test_feature_methods_pair_the_right_features(cifar):
    m = build("fitnet", cifar.student, cifar.teacher, cifar.images[:2])
    assert (m.student_features(), m.teacher_features()) == (["stage2"], ["stage2"])
    m = build("fitnet", cifar.student, cifar.teacher, cifar.images[:2], params={"hint_layer": "stage3",
                                                                               "student_layer": "stage2"})
    assert m.auxiliary["regressor"](torch.randn(2, 128, 16, 16)).shape == (2, 256, 8, 8)
    for name in ("at", "nst", "vid"):
        m = build(name, cifar.student, cifar.teacher, cifar.images[:2])
        assert m.student_features() == m.teacher_features() == ["stage1", "stage2", "stage3"]
    assert build("sp", cifar.student, cifar.teacher, cifar.images[:2]).teacher_features() == ["stage3"]
    for name in ("rkd", "pkt", "cc"):
        assert build(name, cifar.student, cifar.teacher, cifar.images[:2]).student_features() == ["pooled"]


def test_dkd_warms_up_with_the_epoch(cifar):
    m = build("dkd", cifar.student, cifar.teacher, cifar.images[:2])
    m.eval()
    values = []
    for epoch in (0, 4, 19, 30):
        m.set_epoch(epoch)
        values.append(m(cifar.images[:2], cifar.targets[:2])[1]["dkd"].item())
    assert [v / values[-1] for v in values] == pytest.approx([1 / 20, 5 / 20, 1.0, 1.0], rel=1e-5)


def test_tf_kd_needs_no_teacher(cifar, tmp_path, tiny):
    from softlabels.config import validate_config

    cls = get_method("tf_kd")
    assert not cls.requires_teacher
    m = cls(copy.deepcopy(cifar.student), None)
    _, terms = m(cifar.images[:2], cifar.targets[:2])
    assert set(terms) == {"ce", "tf_kd"}
    validate_config(tiny(tmp_path, method={"name": "tf_kd"}), check_files=False)


# ----------------------------------------------------------------------------- (3) auxiliary state
@pytest.mark.parametrize("name", sorted(WITH_AUX) + ["fitnet+wsl"])
def test_auxiliary_modules_round_trip(cifar, name):
    m = build(name, cifar.student, cifar.teacher, cifar.images)
    m.train()
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.1)
    for _ in range(2):  # move the auxiliary weights and BN statistics away from their initialisation
        opt.zero_grad()
        sum(m(cifar.images, cifar.targets)[1].values()).backward()
        opt.step()
    state = copy.deepcopy(m.auxiliary.state_dict())
    assert state
    torch.manual_seed(123)  # a different initialisation
    other = build(name, cifar.student, cifar.teacher, cifar.images)
    assert any(not torch.equal(v, other.auxiliary.state_dict()[k]) for k, v in state.items())
    other.auxiliary.load_state_dict(state)
    other.student.load_state_dict(m.student.state_dict())
    m.eval()
    other.eval()
    a, b = m(cifar.images, cifar.targets)[1], other(cifar.images, cifar.targets)[1]
    assert set(a) == set(b)
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item(), rel=1e-6), k


# ----------------------------------------------------------------------------- (4) registry, combinations
def test_list_methods_names_part_a():
    names = set(list_methods())
    assert set(METHODS) <= names
    assert not any("+" in n for n in names)


def test_combined_classes_and_params():
    cls = get_method("fitnet+wsl")
    assert cls is get_method("fitnet+wsl") is make_combined(["fitnet", "wsl"])
    assert cls is not get_method("wsl+fitnet")
    p = cls.Params.model_validate({"fitnet": {"weight": 50}, "wsl": {"temperature": 2, "alpha": 2.5}})
    assert p.fitnet.weight == 50 and p.fitnet.hint_layer == "stage2" and p.wsl.alpha == 2.5
    assert p.temperature == 2.0 and p.init_epochs == 0
    assert cls.Params().wsl.temperature == 4.0
    with pytest.raises(ValidationError):
        cls.Params.model_validate({"fitnet": {"nope": 1}})
    with pytest.raises(ValidationError):
        cls.Params.model_validate({"kd": {}})
    assert get_method("ab+kd").Params().init_epochs == 30
    assert get_method("tf_kd+kd").requires_teacher and not get_method("tf_kd").requires_teacher
    with pytest.raises(UserError, match="unknown method"):
        get_method("fitnet+nope")
    with pytest.raises(ConfigError, match="twice"):
        get_method("kd+kd")
    with pytest.raises(ConfigError, match="a\\+b"):
        get_method("kd+")


def test_combined_config_validates(tmp_path, tiny):
    from softlabels.config import method_params, validate_config

    method = {"name": "fitnet+wsl", "fitnet": {"weight": 100}, "wsl": {"temperature": 4, "alpha": 2.25}}
    cfg = tiny(tmp_path, method=method, teacher={"name": "resnet8", "checkpoint": "t.pt"})
    exp = validate_config(cfg, check_files=False)
    assert method_params(exp).fitnet.weight == 100
    cfg["method"]["wsl"]["alpha"] = -1
    with pytest.raises(ConfigError, match="alpha"):
        validate_config(cfg, check_files=False)


def test_combined_shares_one_forward_pass_and_one_set_of_hooks(cifar):
    student, teacher = create_model("resnet8x4", 100), create_model("resnet32x4", 100)  # fresh: no hooks yet
    m = build("fitnet+wsl", student, teacher, cifar.images[:2])
    calls = {"student": 0, "teacher": 0}
    m.student.register_forward_hook(lambda *_: calls.__setitem__("student", calls["student"] + 1))
    m.teacher.register_forward_hook(lambda *_: calls.__setitem__("teacher", calls["teacher"] + 1))
    m.train()
    _, terms = m(cifar.images[:2], cifar.targets[:2])
    assert calls == {"student": 1, "teacher": 1}
    assert list(terms) == ["ce", "fitnet", "wsl"]
    assert len(m.student.layer2._forward_hooks) == 1 and len(m.teacher.layer2._forward_hooks) == 1
    # components are helpers, not submodules: the state dict holds the student and teacher once
    keys = list(m.state_dict())
    assert not any(k.startswith("_parts") for k in keys)
    assert sum(k.startswith("student.") for k in keys) == len(m.student.state_dict())
    assert set(m.auxiliary.state_dict()) == {f"fitnet.{k}" for k in m.parts["fitnet"].auxiliary.state_dict()}


def test_combined_terms_equal_the_components_alone(cifar):
    combo = build("fitnet+wsl", cifar.student, cifar.teacher, cifar.images[:2])
    fit = get_method("fitnet")(combo.student, combo.teacher)
    fit.setup(cifar.images[:2])
    fit.auxiliary.load_state_dict(combo.auxiliary["fitnet"].state_dict())
    wsl = get_method("wsl")(combo.student, combo.teacher)
    for m in (combo, fit, wsl):
        m.eval()
    x, y = cifar.images[:2], cifar.targets[:2]
    c = combo(x, y)[1]
    assert c["fitnet"].item() == pytest.approx(fit(x, y)[1]["fitnet"].item(), rel=1e-6)
    w = wsl(x, y)[1]
    assert c["wsl"].item() == pytest.approx(w["wsl"].item(), rel=1e-6)
    assert c["ce"].item() == pytest.approx(w["ce"].item(), rel=1e-6)


def test_combined_keeps_the_last_ce_and_prefixes_other_duplicates(cifar):
    params = {"crd": {"nce_k": 16, "ce_weight": 1.0, "kd_weight": 0.5}, "kd": {"ce_weight": 0.1, "kd_weight": 0.9}}
    m = build("crd+kd", cifar.student, cifar.teacher, cifar.images, cifar.data, params)
    m.train()
    _, terms = m(cifar.images, cifar.targets, cifar.indices)
    assert set(terms) == {"ce", "crd", "crd_kd", "kd_kd"}
    ce = F.cross_entropy(m.student(cifar.images), cifar.targets).item()
    assert terms["ce"].item() == pytest.approx(0.1 * ce, rel=1e-5)
    assert terms["crd_kd"].item() / terms["kd_kd"].item() == pytest.approx(0.5 / 0.9, rel=1e-5)


def test_combined_init_phase_runs_only_components_with_one():
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 10), create_model("resnet8", 10)
    x, y = torch.randn(4, 3, 16, 16), torch.arange(4)
    m = build("ab+kd", student, teacher, x, params={"ab": {"init_epochs": 2}, "kd": {"ce_weight": 1.0}})
    assert m.init_epochs == 2
    m.train()
    seen = []
    for epoch in (0, 1, 2):
        m.set_epoch(epoch)
        seen.append(set(m(x, y)[1]))
    assert seen == [{"ab"}, {"ab"}, {"ce", "kd"}]
    assert all(part.epoch == 2 and part.training for part in m.parts.values())
    m.eval()
    assert not any(part.training for part in m.parts.values())


# ----------------------------------------------------------------------------- (5) Fashion-MNIST shape, Trainer
@pytest.mark.parametrize("name", METHODS + ["fitnet+wsl", "at+kd"])
def test_fashion_mnist_shaped_resnet20_to_resnet8(name):
    torch.manual_seed(0)
    teacher, student = create_model("resnet20", 10, in_channels=1), create_model("resnet8", 10, in_channels=1)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 1, 28, 28, generator=g)
    targets = torch.arange(8) % 10
    m = build(name, student, teacher, images)
    m.train()
    m.set_epoch(1)
    _, terms = m(images, targets, torch.arange(8))
    loss = sum(terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert grads(m.student)


def test_trainer_runs_and_resumes_a_combined_method(tmp_path, tiny, tiny_teacher):
    """fitnet+wsl through the real Trainer: two epochs, and one run stopped after the first and resumed."""
    from softlabels.config import validate_config
    from softlabels.engine import Trainer
    from softlabels.engine.checkpoint import load_checkpoint

    method = {"name": "fitnet+wsl", "fitnet": {"hint_layer": "stage2"}, "wsl": {"temperature": 2.0}}

    def config(name):
        cfg = tiny(tmp_path, name=name, method=method, teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)},
                   epochs=2)
        cfg["data"]["synthetic"]["train_size"] = 64
        return validate_config(cfg)

    full = Trainer(config("full"))
    assert full.tracker is not None and full.tracker.temperature == 2.0
    full.fit()
    first = Trainer(config("cut"))
    first.total_epochs = 1
    first.fit()
    Trainer(config("cut"), resume=True).fit()
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["auxiliary"] and all(k.startswith("fitnet.regressor.") for k in a["auxiliary"])
    for part in ("model", "auxiliary"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    row = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_loss_ce", "train_loss_fitnet", "train_loss_wsl"} <= set(row)


if __name__ == "__main__":
    if "--write-reference" in sys.argv:
        write_reference()
