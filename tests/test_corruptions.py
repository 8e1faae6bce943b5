"""Corruptions: identity at severity 0, monotone strength, determinism, evaluation on synthetic data."""
from __future__ import annotations

import pytest
import torch

from softlabels.corruptions import CORRUPTIONS, DEFAULT_CORRUPTIONS, corrupt, evaluate_corruptions


def _images(seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(4, 3, size // 4, size // 4, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(4, 3, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_severity_monotone_range_and_determinism(name):
    x = _images()
    assert corrupt(x, name, 0) is x
    dists = []
    for sev in range(1, 6):
        y = corrupt(x, name, sev, seed=3)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, corrupt(x, name, sev, seed=3))  # deterministic given the seed
        dists.append(float((y - x).pow(2).mean().sqrt()))
    assert dists[0] > 0
    for a, b in zip(dists, dists[1:]):
        assert b >= a - 1e-6, (name, dists)
    assert dists[-1] > dists[0]


def test_random_corruptions_depend_on_the_seed():
    x = _images()
    for name in ("gaussian_noise", "shot_noise", "impulse_noise"):
        assert not torch.equal(corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=1))


def test_bad_arguments():
    x = _images()
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "contrast", 6)


def test_evaluate_corruptions_on_synthetic_data(tmp_path, tiny):
    from softlabels.config import validate_config
    from softlabels.data import build_data
    from softlabels.engine.trainer import evaluate
    from softlabels.models import create_model

    exp = validate_config(tiny(tmp_path))
    data = build_data(exp.data, device=torch.device("cpu"), seed=0)
    torch.manual_seed(0)
    model = create_model("resnet8", data.info.num_classes, data.info.in_channels)
    model.train()
    clean = evaluate(model, data.test, data.info.num_classes)["top1"]
    names = list(DEFAULT_CORRUPTIONS)
    result = evaluate_corruptions(model, data.test, data.info.mean, data.info.std, names, (0, 1, 5))
    assert model.training  # mode restored
    assert set(result) == set(names)
    for name in names:
        assert set(result[name]) == {0, 1, 5}
        assert result[name][0] == pytest.approx(clean)  # severity 0 is the identity
        assert all(0 <= v <= 100 for v in result[name].values())
    again = evaluate_corruptions(model, data.test, data.info.mean, data.info.std, names, (0, 1, 5))
    assert again == result  # deterministic
    with pytest.raises(ValueError, match="unknown corruption"):
        evaluate_corruptions(model, data.test, data.info.mean, data.info.std, ["fog"], (1,))
