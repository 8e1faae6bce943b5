"""InfoDrop: self-information scores, the drop mask, train/eval/active behaviour, insertion into zoo models."""
from __future__ import annotations

import copy

import pytest
import torch

from softlabels.features import FeatureCapture
from softlabels.models import create_model
from softlabels.models.infodrop import PRESETS, InfoDrop, infodrop_layers, insert_infodrop, set_infodrop_active


def _texture_and_edge(size=32):
    """A flat image with a checkerboard texture patch (rows/cols 4..13) and a block whose left edge is col 22."""
    img = torch.zeros(1, 1, size, size)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    img[0, 0, 4:14, 4:14] = ((yy + xx) % 2).float()[4:14, 4:14]
    img[0, 0, 18:30, 22:] = 1.0
    return img


@pytest.mark.parametrize("mode,value", [("replicate", 0.7), ("zeros", 0.0)])
def test_constant_image_gives_uniform_probability(mode, value):
    layer = InfoDrop(1.5, 0.03, padding_mode=mode, kernel_size=3, padding=1)
    prob = layer.drop_probability(torch.full((2, 3, 10, 12), value))
    assert prob.shape == (2, 1, 10, 12)
    torch.testing.assert_close(prob, torch.full_like(prob, 1 / 120))


def test_texture_is_dropped_more_than_an_isolated_edge():
    img = _texture_and_edge()
    layer = InfoDrop(1.5, 0.5, num_offsets=None, kernel_size=3, padding=1)
    p_hat = layer.likelihood(img)[0, 0]
    prob = layer.drop_probability(img)[0, 0]
    texture, edge = (9, 9), (24, 22)
    assert p_hat[texture] > p_hat[edge]  # the texture patch is more likely among its neighbours
    assert prob[texture] > 2 * prob[edge]  # (p_hat ratio)^(1/T)
    assert torch.allclose(prob.sum(), torch.tensor(1.0))
    # with random offsets (the official 9), the same order on average
    torch.manual_seed(0)
    sampled = InfoDrop(1.5, 0.5, kernel_size=3, padding=1)
    mean = torch.stack([sampled.drop_probability(img)[0, 0] for _ in range(30)]).mean(0)
    assert mean[texture] > mean[edge]


def test_mask_shape_shared_distribution_per_channel_positions_no_rescaling():
    torch.manual_seed(0)
    x = torch.rand(2, 8, 12, 12) + 1.0  # strictly positive: a zero means dropped
    layer = InfoDrop(1.5, 0.03).train()
    mask = layer.drop_mask(x, x.shape)
    assert mask.shape == x.shape and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(mask[:, 0], mask[:, 1])  # positions sampled per channel
    out = layer(x)
    kept = out != 0
    assert torch.equal(out[kept], x[kept])  # kept values unchanged: no 1/(1-p) rescaling
    dropped = 1 - kept.float().mean()
    assert 0 < dropped < 1
    few = InfoDrop(*PRESETS["few_shot"]).train()(x)
    assert 0 < (few == 0).float().mean() <= 0.1 + 1e-6
    # x_out differs from x_in: the mask has x_out's shape
    y = torch.rand(2, 5, 12, 12) + 1
    assert layer(x, y).shape == y.shape


def test_identity_in_eval_mode_and_when_inactive():
    x = torch.rand(2, 4, 8, 8) + 1
    layer = InfoDrop(1.5, 0.03)
    assert torch.equal(layer.eval()(x), x)
    layer.train()
    layer.active = False
    assert torch.equal(layer(x), x)
    layer.active = True
    assert not torch.equal(layer(x), x)


def test_min_pool_and_geometry_mismatch():
    x = torch.rand(1, 3, 16, 16)
    pooled = InfoDrop(1.5, 0.03, kernel_size=3, stride=2, padding=1, min_pool=(3, 2, 1))
    assert pooled.drop_probability(x).shape == (1, 1, 4, 4)
    with pytest.raises(ValueError, match="geometry"):
        InfoDrop(1.5, 0.03).train()(x, torch.rand(1, 3, 8, 8))


def test_insert_into_zoo_model():
    torch.manual_seed(0)
    model = create_model("resnet8", 4, 3)
    reference = copy.deepcopy(model)
    keys = set(model.state_dict())
    insert_infodrop(model, ["stem", "stage2"], drop_rate=1.5, temperature=0.03)
    assert set(model.state_dict()) == keys  # checkpoints unchanged
    assert len(infodrop_layers(model)) == 2
    x = torch.randn(4, 3, 12, 12)
    capture = FeatureCapture(model, ["stem", "stage2"])  # registered after: sees the dropped output
    model.train()
    model(x)
    assert (capture.get("stem") == 0).float().mean() > 0.2
    assert (capture.get("stage2") == 0).float().mean() > 0.2
    assert model.infodrop_layers["stage2"].stride == 2  # inferred from the stage's resolutions
    reference.load_state_dict(model.state_dict())  # same BN statistics
    model.eval()
    reference.eval()
    assert torch.equal(model(x), reference(x))
    set_infodrop_active(model, False)  # fine-tuning phase: identical to the plain model
    model.train()
    reference.train()
    assert torch.equal(model(x), reference(x))


def test_official_stem_placement_scores_the_image():
    torch.manual_seed(0)
    model = create_model("resnet8", 4, 3)
    insert_infodrop(model, ["stem"], input_from="module:conv1", drop_rate=1.5, temperature=0.03)
    layer = model.infodrop_layers["stem"]
    capture = FeatureCapture(model, ["stem"])
    model.train()
    model(torch.randn(2, 3, 12, 12))
    assert (layer.kernel_size, layer.stride, layer.padding) == (3, 1, 1)  # conv1's geometry
    assert (capture.get("stem") == 0).float().mean() > 0.2
    # output-scored variant
    other = insert_infodrop(create_model("resnet8", 4, 3), ["stage1"], source="output").train()
    assert other(torch.randn(2, 3, 12, 12)).shape == (2, 4)
