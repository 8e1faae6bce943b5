"""Known-answer and property tests for the KD and WSL losses."""
import math

import pytest
import torch
import torch.nn.functional as F

from softlabels.losses import (
    KDLoss,
    WSLLoss,
    kd_loss,
    regularization_mask,
    wsl_loss,
    wsl_soft_loss,
    wsl_weights,
)

LN3 = math.log(3.0)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def two_class_case():
    """Student logits (0, 0) -> p_s = (1/2, 1/2); teacher (ln 3, 0) -> p_t = (3/4, 1/4); label 0."""
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[LN3, 0.0]])
    y = torch.tensor([0])
    return s, t, y


def test_kd_loss_known_answer_t1():
    s, t, _ = two_class_case()
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812...
    assert kd_loss(s, t, 1.0).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1308120, abs=1e-6)


def test_kd_loss_known_answer_t2_scales_by_t_squared():
    s, t, _ = two_class_case()
    pt = softmax([LN3 / 2, 0.0])
    kl = sum(a * math.log(a / 0.5) for a in pt)
    assert kd_loss(s, t, 2.0).item() == pytest.approx(4 * kl, abs=1e-6)
    assert KDLoss(2.0)(s, t).item() == pytest.approx(4 * kl, abs=1e-6)


def test_kd_loss_is_batch_mean():
    s, t, _ = two_class_case()
    s2 = torch.cat([s, t])  # second sample: student equals teacher, KL 0
    t2 = torch.cat([t, t])
    assert kd_loss(s2, t2, 1.0).item() == pytest.approx(kd_loss(s, t, 1.0).item() / 2, abs=1e-7)


def test_wsl_weight_known_answer():
    s, t, y = two_class_case()
    ratio = math.log(2.0) / -math.log(0.75)
    expected = 1 - math.exp(-ratio)  # 0.91012...
    w = wsl_weights(s, t, y)
    assert w.shape == (1,)
    assert w.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.910125, abs=1e-5)


@pytest.mark.parametrize("r,expected", [(0.1, 0.0952), (0.25, 0.2212), (0.5, 0.3935), (1, 0.6321), (2, 0.8647),
                                        (3, 0.9502), (5, 0.9933)])
def test_wsl_weight_table(r, expected):
    # two classes, label 0: CE = log(1 + exp(z1 - z0)); choose the student's margin so CE_s = r * CE_t
    ce_t = 0.4
    ce_s = r * ce_t
    t = torch.tensor([[0.0, math.log(math.exp(ce_t) - 1)]], dtype=torch.float64)
    s = torch.tensor([[0.0, math.log(math.exp(ce_s) - 1)]], dtype=torch.float64)
    w = wsl_weights(s, t, torch.tensor([0]))
    assert w.item() == pytest.approx(expected, abs=1e-4)


def test_wsl_weight_equal_losses_is_one_minus_inv_e():
    torch.manual_seed(0)
    z = torch.randn(16, 7)
    y = torch.randint(0, 7, (16,))
    w = wsl_weights(z, z.clone(), y)
    assert torch.allclose(w, torch.full_like(w, 1 - math.exp(-1)), atol=1e-5)


def test_wsl_weights_detached_range_and_shape():
    torch.manual_seed(1)
    s = torch.randn(32, 10, requires_grad=True)
    t = torch.randn(32, 10, requires_grad=True)
    y = torch.randint(0, 10, (32,))
    w = wsl_weights(s, t, y)
    assert w.shape == (32,) and not w.requires_grad and w.grad_fn is None
    assert bool((w >= 0).all()) and bool((w < 1).all())


def test_soft_loss_cross_entropy_form_known_answer():
    s, t, y = two_class_case()
    w = 1 - math.exp(-math.log(2.0) / -math.log(0.75))
    soft_ce = math.log(2.0)  # -(3/4 ln 1/2 + 1/4 ln 1/2)
    assert wsl_soft_loss(s, t, y, 1.0).item() == pytest.approx(w * soft_ce, abs=1e-6)
    assert wsl_soft_loss(s, t, y, 1.0, weighting="none").item() == pytest.approx(soft_ce, abs=1e-6)


def test_weighting_none_with_kl_form_is_kd():
    torch.manual_seed(2)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    for temp in (1.0, 2.0, 4.0):
        a = wsl_soft_loss(s, t, y, temp, form="kl", weighting="none")
        assert a.item() == pytest.approx(kd_loss(s, t, temp).item(), rel=1e-5)


def test_ce_and_kl_forms_have_identical_gradients():
    torch.manual_seed(3)
    base = torch.randn(6, 4, dtype=torch.float64)
    t = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    grads = []
    for form in ("ce", "kl"):
        s = base.clone().requires_grad_()
        wsl_soft_loss(s, t, y, 3.0, form=form).backward()
        grads.append(s.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_true_class_gradient_matches_paper_formula():
    """d(T^2 softCE)/dz_y = T (p_s^T(y) - p_t^T(y)) / B with w = 1."""
    torch.manual_seed(4)
    temp = 4.0
    s = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 6, dtype=torch.float64)
    y = torch.randint(0, 6, (5,))
    wsl_soft_loss(s, t, y, temp, weighting="none").backward()
    p_s = F.softmax(s.detach() / temp, 1).gather(1, y[:, None]).squeeze(1)
    p_t = F.softmax(t / temp, 1).gather(1, y[:, None]).squeeze(1)
    expected = temp * (p_s - p_t) / 5
    assert torch.allclose(s.grad.gather(1, y[:, None]).squeeze(1), expected, atol=1e-12)


def test_gradcheck_float64():
    """Analytic vs numerical gradients. The WSL weight is a constant by design (the finite
    differences would move it), so the weighted loss is checked with its weights frozen."""
    torch.manual_seed(5)
    s = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (4,))
    w = wsl_weights(s, t, y)
    assert torch.autograd.gradcheck(lambda x: wsl_soft_loss(x, t, y, 2.0, weighting="none"), (s,))
    assert torch.autograd.gradcheck(lambda x: wsl_soft_loss(x, t, y, 2.0, form="kl", weighting="none"), (s,))
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, 3.0), (s,))
    assert torch.autograd.gradcheck(lambda x: wsl_loss(x, t, y, 4.0, 2.25, weighting="none"), (s,))

    def frozen_weighted(x):
        soft_ce = -(F.softmax(t / 2.0, 1) * F.log_softmax(x / 2.0, 1)).sum(1)
        return 4.0 * (w * soft_ce).mean()

    assert torch.autograd.gradcheck(frozen_weighted, (s,))
    x = s.detach().clone().requires_grad_()
    wsl_soft_loss(x, t, y, 2.0).backward()
    x2 = s.detach().clone().requires_grad_()
    frozen_weighted(x2).backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-12)


def test_no_gradient_reaches_teacher():
    torch.manual_seed(6)
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    y = torch.randint(0, 3, (4,))
    (wsl_soft_loss(s, t, y, 4.0) + kd_loss(s, t, 4.0)).backward()
    assert t.grad is None and s.grad is not None


def test_weight_is_treated_as_constant():
    """The gradient equals w_i times the unweighted per-sample gradient: none flows through w."""
    torch.manual_seed(7)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (3,))
    wsl_soft_loss(s, t, y, 2.0).backward()
    weighted = s.grad.clone()
    s.grad = None
    wsl_soft_loss(s, t, y, 2.0, weighting="none").backward()
    w = wsl_weights(s, t, y)
    assert torch.allclose(weighted, w[:, None] * s.grad, atol=1e-12)


def test_finite_when_teacher_ce_is_zero_and_logits_huge():
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[1e4, -1e4, -1e4], [1e4, -1e4, -1e4], [1e4, -1e4, -1e4]])
    y = torch.tensor([0, 0, 0])
    w = wsl_weights(s, t, y)
    assert torch.isfinite(w).all()
    assert w[0].item() == 0.0  # both perfect: 0 / (0 + eps) -> w = 0, not NaN
    assert w[1].item() == pytest.approx(1.0)  # teacher perfect, student wrong: w -> 1
    for loss in (wsl_soft_loss(s, t, y, 4.0), kd_loss(s, t, 4.0), wsl_loss(s, t, y)):
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(s.grad).all()
        s.grad = None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32(dtype):
    torch.manual_seed(8)
    s32, t32 = torch.randn(8, 100) * 5, torch.randn(8, 100) * 5
    y = torch.randint(0, 100, (8,))
    s, t = s32.to(dtype), t32.to(dtype)
    for fn, ref in ((lambda a, b: wsl_soft_loss(a, b, y, 4.0), lambda a, b: wsl_soft_loss(a, b, y, 4.0)),
                    (lambda a, b: kd_loss(a, b, 4.0), lambda a, b: kd_loss(a, b, 4.0))):
        out = fn(s, t)
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(ref(s.float(), t.float()).item(), rel=1e-5)
    assert wsl_weights(s, t, y).dtype == torch.float32


def test_regularization_mask_by_hand():
    # sample 0: student p(y) 1/2 < teacher 3/4 -> not regularization
    # sample 1: student (ln 3, 0) -> 3/4 > teacher (0, 0) -> 1/2 -> regularization
    s = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    t = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 0])
    assert regularization_mask(s, t, y, 1.0).tolist() == [False, True]
    assert regularization_mask(s, t, y, 4.0).tolist() == [False, True]


def test_regularization_mask_depends_on_temperature():
    # student splits its mass between two classes, the teacher has a long flat tail:
    # at T = 1 the student is below the teacher on the true class, at T = 8 above it.
    s = torch.tensor([[3.0, 3.0, -10.0]])
    t = torch.tensor([[2.0, 0.0, 0.0]])
    y = torch.tensor([0])
    p_s1 = softmax([3.0, 3.0, -10.0])[0]
    p_t1 = softmax([2.0, 0.0, 0.0])[0]
    p_s8 = softmax([3 / 8, 3 / 8, -10 / 8])[0]
    p_t8 = softmax([2 / 8, 0.0, 0.0])[0]
    assert (p_s1 > p_t1) != (p_s8 > p_t8)  # the hand computation says they disagree
    assert regularization_mask(s, t, y, 1.0).item() == (p_s1 > p_t1)
    assert regularization_mask(s, t, y, 8.0).item() == (p_s8 > p_t8)


def test_filter_weighting_zeroes_regularization_samples():
    s = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    t = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 0])
    filtered = wsl_soft_loss(s, t, y, 1.0, weighting="filter").item()
    only_first = wsl_soft_loss(s[:1], t[:1], y[:1], 1.0, weighting="none").item()
    assert filtered == pytest.approx(only_first / 2, abs=1e-7)


def test_wsl_loss_is_ce_plus_alpha_soft_and_module_matches():
    torch.manual_seed(9)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    expected = F.cross_entropy(s, y) + 2.25 * wsl_soft_loss(s, t, y, 4.0)
    assert wsl_loss(s, t, y, 4.0, 2.25).item() == pytest.approx(expected.item(), rel=1e-6)
    assert WSLLoss(4.0, 2.25)(s, t, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_bad_inputs_raise():
    s = torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, s, 0.0)
    with pytest.raises(ValueError, match="shapes"):
        kd_loss(s, torch.randn(4, 5), 1.0)
    with pytest.raises(ValueError, match="target"):
        wsl_weights(s, s, torch.zeros(3, dtype=torch.long))
