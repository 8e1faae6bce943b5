"""Known-answer tests of the bias–variance decompositions (Heskes cross-entropy, Yang et al. MSE)."""
from __future__ import annotations

import math

import pytest
import torch

from softlabels.analysis.bias_variance import BiasVariance, cross_entropy_bias_variance, mse_bias_variance


def _two_models() -> tuple[torch.Tensor, torch.Tensor]:
    """Two models on one sample: [0.5, 0.5] and [0.9, 0.1]; true class 0."""
    probs = torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]], dtype=torch.float64)
    return probs, torch.tensor([0])


def _random_log_probs(models=5, samples=200, classes=10, scale=3.0, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(models, samples, classes, generator=gen, dtype=torch.float64), -1)


def test_cross_entropy_known_answer_two_models():
    probs, y = _two_models()
    r = cross_entropy_bias_variance(probs.log(), y)
    # geometric mean: sqrt(.5 * .9) = sqrt(.45), sqrt(.5 * .1) = sqrt(.05); normalised: 3/4 and 1/4
    z = math.sqrt(0.45) + math.sqrt(0.05)
    torch.testing.assert_close(r.average.exp(), torch.tensor([[0.75, 0.25]], dtype=torch.float64))
    assert r.bias.item() == pytest.approx(-math.log(0.75), abs=1e-12)
    assert r.variance.item() == pytest.approx(-math.log(z), abs=1e-12)
    assert r.risk.item() == pytest.approx((-math.log(0.5) - math.log(0.9)) / 2, abs=1e-12)
    assert r.noise.item() == 0.0
    # the variance is the mean over models of KL(ȳ ‖ p_m)
    ybar = torch.tensor([0.75, 0.25], dtype=torch.float64)
    kl = [float((ybar * (ybar.log() - p.log())).sum()) for p in probs[:, 0]]
    assert r.variance.item() == pytest.approx(sum(kl) / 2, abs=1e-12)
    assert r.kind == "cross_entropy" and r.num_models == 2


def test_cross_entropy_identity_and_nonnegative_variance():
    lp = _random_log_probs()
    y = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(1))
    r = cross_entropy_bias_variance(lp, y)
    assert r.bias.dtype == torch.float64 and r.bias.shape == (200,)
    torch.testing.assert_close(r.bias + r.variance, r.risk, rtol=0, atol=1e-12)
    assert bool((r.variance >= 0).all()) and bool((r.bias >= 0).all())
    # variance equals the mean of the per-model KL(ȳ ‖ p_m), computed directly
    avg = r.average.exp()
    kl = (avg.unsqueeze(0) * (r.average.unsqueeze(0) - lp)).sum(-1).mean(0)
    torch.testing.assert_close(r.variance, kl, rtol=0, atol=1e-12)
    # risk is the models' mean cross-entropy
    torch.testing.assert_close(r.risk, -lp.gather(2, y.view(1, -1, 1).expand(5, -1, 1)).squeeze(2).mean(0))


def test_arithmetic_mean_would_not_add_up():
    """With the arithmetic-mean model the terms do not sum to the risk (why Heskes uses the geometric mean)."""
    probs, y = _two_models()
    arith = probs.mean(0)[0]
    bias_arith = -math.log(arith[0].item())
    var_arith = float(sum((arith * (arith.log() - p.log())).sum() for p in probs[:, 0]) / 2)
    risk = cross_entropy_bias_variance(probs.log(), y).risk.item()
    assert abs(bias_arith + var_arith - risk) > 1e-3


def test_identical_models_have_zero_variance():
    one = _random_log_probs(models=1, samples=50)
    y = torch.zeros(50, dtype=torch.long)
    r = cross_entropy_bias_variance(one.expand(4, -1, -1), y)
    assert float(r.variance.abs().max()) < 1e-12
    torch.testing.assert_close(r.bias, r.risk, rtol=0, atol=1e-12)
    m = mse_bias_variance(one.exp().expand(4, -1, -1), y)
    assert float(m.variance.abs().max()) < 1e-15


def test_extreme_log_probs_stay_finite():
    """log-probabilities of about -1e4 (confident, disagreeing models) are handled in log space."""
    a = torch.log_softmax(torch.tensor([0.0, -1e4, -1e4]), 0)
    b = torch.log_softmax(torch.tensor([-1e4, 0.0, -1e4]), 0)
    lp = torch.stack([a, b]).unsqueeze(1)  # (2 models, 1 sample, 3 classes), float32 input
    r = cross_entropy_bias_variance(lp, torch.tensor([0]))
    for k in ("bias", "variance", "risk"):
        assert torch.isfinite(r[k]).all()
    # ȳ ∝ exp(mean log p) = [e^-5000, e^-5000, e^-10000]: Z ≈ 2 e^-5000, variance = 5000 - log 2
    assert r.variance.item() == pytest.approx(5000 - math.log(2), rel=1e-9)
    assert r.bias.item() == pytest.approx(math.log(2), rel=1e-6)
    torch.testing.assert_close(r.bias + r.variance, r.risk, rtol=1e-12, atol=1e-9)


def test_logits_are_renormalised():
    lp = _random_log_probs(models=3, samples=20)
    y = torch.arange(20) % 10
    shifted = lp + torch.randn(3, 20, 1, dtype=torch.float64)  # logits: log-probs plus a per-row constant
    a, b = cross_entropy_bias_variance(lp, y), cross_entropy_bias_variance(shifted, y)
    for k in ("bias", "variance", "risk"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-12)


def test_soft_targets_general_form():
    lp = _random_log_probs(models=4, samples=30, classes=5)
    t = torch.softmax(torch.randn(30, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64), -1)
    t[0] = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)  # a one-hot row among the soft ones
    r = cross_entropy_bias_variance(lp, t)
    torch.testing.assert_close(r.noise, -(t * t.clamp_min(1e-300).log()).sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(r.bias, (t * (t.clamp_min(1e-300).log() - r.average)).sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(r.noise + r.bias + r.variance, r.risk, rtol=0, atol=1e-12)
    assert bool((r.bias >= -1e-12).all())
    # a one-hot target gives the hard-label answer
    hard = cross_entropy_bias_variance(lp[:, :1], torch.tensor([0]))
    assert r.bias[0].item() == pytest.approx(hard.bias.item(), abs=1e-12)
    assert r.noise[0].item() == 0.0
    with pytest.raises(ValueError, match="sum to 1"):
        cross_entropy_bias_variance(lp, t * 2)


def test_result_is_a_mapping_with_means():
    lp = _random_log_probs(models=3, samples=40)
    r = cross_entropy_bias_variance(lp, torch.arange(40) % 10)
    assert isinstance(r, BiasVariance)
    assert r["bias"] is r.bias and set(r) == {"noise", "bias", "variance", "risk"}
    assert set(r.as_dict()) == {"noise", "bias", "variance", "risk"} and dict(r)["risk"] is r.risk
    means = r.mean()
    assert means["bias"] == pytest.approx(float(r.bias.mean()))
    assert means["bias"] + means["variance"] == pytest.approx(means["risk"], abs=1e-12)
    assert r.num_samples == 40
    with pytest.raises(KeyError):
        r["average"]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="models, samples, classes"):
        cross_entropy_bias_variance(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        cross_entropy_bias_variance(torch.zeros(2, 3, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        cross_entropy_bias_variance(torch.zeros(2, 3, 4), torch.tensor([0, 1, 4]))


# --------------------------------------------------------------------------------------------- MSE
def test_mse_known_answer_two_models():
    probs, y = _two_models()
    r = mse_bias_variance(probs, y)
    # f̄ = [0.7, 0.3]; ‖f_j - f̄‖² = 0.08 each; (1/2)(0.16) x 2/(2-1) = 0.16
    assert r.variance.item() == pytest.approx(0.16, abs=1e-12)
    # ‖y - f_1‖² = 0.5, ‖y - f_2‖² = 0.02 -> risk 0.26; bias² = risk - variance = 0.10
    assert r.risk.item() == pytest.approx(0.26, abs=1e-12)
    assert r.bias.item() == pytest.approx(0.10, abs=1e-12)
    torch.testing.assert_close(r.average, torch.tensor([[0.7, 0.3]], dtype=torch.float64))
    # ‖y - f̄‖² = 0.18 = bias² + variance / N: the plug-in bias is biased upward
    assert ((torch.tensor([1.0, 0.0], dtype=torch.float64) - r.average[0]) ** 2).sum().item() == pytest.approx(
        r.bias.item() + r.variance.item() / 2, abs=1e-12)
    assert r.kind == "mse" and r.mean()["bias"] == pytest.approx(0.10)
    # a one-hot float target is the same as the label
    onehot = mse_bias_variance(probs, torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(onehot.risk, r.risk)


def test_mse_unbiased_factor():
    """The N/(N-1) factor makes the variance estimate unbiased: models = f0 + Gaussian noise of known variance."""
    gen = torch.Generator().manual_seed(0)
    n, samples, classes, sigma = 2, 20000, 3, 0.1
    f = torch.full((n, samples, classes), 0.3, dtype=torch.float64) + sigma * torch.randn(
        n, samples, classes, generator=gen, dtype=torch.float64)
    r = mse_bias_variance(f, torch.zeros(samples, dtype=torch.long))
    true = classes * sigma**2
    assert r.variance.mean().item() == pytest.approx(true, rel=0.03)
    # without the factor the estimate would be (N-1)/N of it
    naive = (f - f.mean(0)).pow(2).sum(-1).mean(0).mean().item()
    assert naive == pytest.approx(r.variance.mean().item() * (n - 1) / n, rel=1e-9)
    torch.testing.assert_close(r.bias + r.variance, r.risk, rtol=0, atol=1e-12)


def test_mse_groups_average_within_group_variances():
    probs, y = _two_models()
    other = torch.tensor([[[0.6, 0.4]], [[0.8, 0.2]]], dtype=torch.float64)  # variance (0.02+0.02)/1 = 0.04
    both = torch.cat([probs, other])
    r = mse_bias_variance(both, y, groups=[0, 0, 1, 1])
    assert r.variance.item() == pytest.approx((0.16 + 0.04) / 2, abs=1e-12)
    assert r.risk.item() == pytest.approx((0.5 + 0.02 + 0.32 + 0.08) / 4, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 models"):
        mse_bias_variance(both, y, groups=[0, 0, 0, 1])
    with pytest.raises(ValueError, match="at least 2 models"):
        mse_bias_variance(probs[:1], y)


# --------------------------------------------------------------------------------------------- width family
def test_width_resnet_family():
    from softlabels.models import create_model, list_models
    from softlabels.models.base import count_parameters
    from softlabels.models.width_resnet import WIDTHS, width_resnet18

    names = set(list_models())
    assert {f"resnet18_w{k}" for k in WIDTHS} <= names
    assert count_parameters(width_resnet18(64, 10)) == 11_173_962  # the usual CIFAR ResNet-18
    small = create_model("resnet18_w2", num_classes=4, in_channels=1)
    assert [m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)][0] == 2
    assert small.fc.in_features == 16
    counts = [count_parameters(create_model(f"resnet18_w{k}", 10)) for k in (1, 2, 4)]
    assert counts == sorted(counts)
    captured = {}
    for key, path in small.feature_layers.items():
        small.get_submodule(path).register_forward_hook(lambda _m, _i, out, key=key: captured.__setitem__(key, out))
    logits = small(torch.randn(2, 1, 12, 12))
    assert logits.shape == (2, 4) and torch.equal(captured["logits"], logits)
    assert captured["stage4"].shape[1] == 16 and captured["pooled"].shape == (2, 16)
