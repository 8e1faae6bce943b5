"""Model zoo: registered names, exact parameter counts, forward shapes and the feature-layer contract."""
from __future__ import annotations

import functools
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softlabels.errors import UserError
from softlabels.models import create_model, list_models
from softlabels.models.base import count_parameters

# Exact trainable-parameter counts with num_classes=100, in_channels=3. They equal the counts of the
# RepDistiller / CRD reference implementations (whose checkpoints load into these models).
CIFAR_PARAMS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "ResNet50": 23_705_252,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "MobileNetV2": 812_836,
    "ShuffleV1": 949_258,
    "ShuffleV2": 1_355_528,
}
MOBILENETV1_PARAMS_1000 = 4_231_976  # ImageNet MobileNet V1 (OFD / WSL / mdistiller), 1000 classes

ALIASES = {"mobilenetv2": "MobileNetV2"}

NUM_STAGES = {name: 3 for name in CIFAR_PARAMS}
NUM_STAGES.update({name: 4 for name in ("ResNet50", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2")})

# Models whose "stageK" is the ReLU of "stageK_pre_relu" (WRN's pre-ReLU entries are the BN after the stage).
POST_RELU_STAGES = {name for name in CIFAR_PARAMS if not name.startswith("wrn")} | {"mobilenetv1"}

FEATURE_KEY = re.compile(r"^(stem|stage\d+|stage\d+_pre_relu|pooled|logits)$")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Batches of 2 gain nothing from intra-op threads, and on a busy 2-core machine a second OpenMP
    thread that waits for a descheduled sibling slows every op down by orders of magnitude."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def cifar100_model(name: str) -> nn.Module:
    """One shared 100-class RGB instance per name (tests that hook it remove their hooks)."""
    torch.manual_seed(0)
    return create_model(name, num_classes=100, in_channels=3)


def run_with_hooks(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
    """Forward ``x`` with a forward hook on every ``feature_layers`` module; return logits and captured outputs."""
    captured: dict[str, list[torch.Tensor]] = {key: [] for key in model.feature_layers}
    handles = [
        model.get_submodule(path).register_forward_hook(lambda _m, _i, out, key=key: captured[key].append(out))
        for key, path in model.feature_layers.items()
    ]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, captured


def check_feature_layers(name: str, model: nn.Module, x: torch.Tensor, num_classes: int, num_stages: int) -> None:
    layers = model.feature_layers
    expected = {"stem", "pooled", "logits"} | {f"stage{k}" for k in range(1, num_stages + 1)}
    assert expected <= set(layers), f"{name}: missing {expected - set(layers)}"
    assert all(FEATURE_KEY.match(key) for key in layers), layers
    assert not {f"stage{num_stages + 1}", f"stage{num_stages + 1}_pre_relu"} & set(layers)

    logits, captured = run_with_hooks(model, x)
    assert logits.shape == (x.shape[0], num_classes)
    for key, outputs in captured.items():
        assert len(outputs) == 1, f"{name}: hook on {key} ({layers[key]}) fired {len(outputs)} times"

    out = {key: outputs[0] for key, outputs in captured.items()}
    assert torch.equal(out["logits"], logits)
    classifier = model.get_submodule(layers["logits"])
    linear = [m for m in classifier.modules() if isinstance(m, nn.Linear)][-1]
    assert out["pooled"].shape == (x.shape[0], linear.in_features)

    maps = [out["stem"]] + [out[f"stage{k}"] for k in range(1, num_stages + 1)]
    for fmap in maps:
        assert fmap.dim() == 4 and fmap.shape[0] == x.shape[0]
    sizes = [fmap.shape[-1] for fmap in maps]
    assert sizes == sorted(sizes, reverse=True), f"{name}: spatial sizes {sizes} should not grow"

    for k in range(1, num_stages + 1):
        pre = out.get(f"stage{k}_pre_relu")
        if pre is None:
            continue
        assert pre.shape == out[f"stage{k}"].shape
        assert (pre < 0).any(), f"{name}: stage{k}_pre_relu has no negative value (mutated in place?)"
        if name in POST_RELU_STAGES:
            torch.testing.assert_close(F.relu(pre), out[f"stage{k}"])


def test_every_name_is_registered():
    names = set(list_models())
    assert set(CIFAR_PARAMS) | set(ALIASES) | {"mobilenetv1"} <= names


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_parameter_count_matches_benchmark(name):
    assert count_parameters(cifar100_model(name)) == CIFAR_PARAMS[name]


def test_aliases_build_the_same_architecture():
    for alias, name in ALIASES.items():
        assert count_parameters(create_model(alias, num_classes=100)) == CIFAR_PARAMS[name]


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_forward_rgb32_and_feature_hooks(name):
    model = cifar100_model(name).train()
    check_feature_layers(name, model, torch.randn(2, 3, 32, 32), 100, NUM_STAGES[name])


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_forward_grayscale28(name):
    model = create_model(name, num_classes=10, in_channels=1)
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "ShuffleV1"])
def test_losses_on_captured_features_backpropagate(name):
    """Captured features keep their graph: no in-place op downstream invalidates them."""
    model = create_model(name, num_classes=10, in_channels=1).train()
    captured = {}
    for key, path in model.feature_layers.items():
        model.get_submodule(path).register_forward_hook(lambda _m, _i, out, key=key: captured.__setitem__(key, out))
    logits = model(torch.randn(2, 1, 28, 28))
    loss = logits.sum() + sum(captured[key].pow(2).mean() for key in model.feature_layers)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_initialisation_is_deterministic_and_standard():
    torch.manual_seed(123)
    a = create_model("resnet8", num_classes=10)
    torch.manual_seed(123)
    b = create_model("resnet8", num_classes=10)
    torch.manual_seed(124)
    c = create_model("resnet8", num_classes=10)
    for (key, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), key
    assert not torch.equal(a.conv1.weight, c.conv1.weight)

    for module in a.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    conv = a.layer3[0].conv2  # 64 x 64 x 3 x 3: kaiming fan_out std = sqrt(2 / (64 * 9))
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.01


def test_parameter_names_follow_the_reference_checkpoints():
    expected = {
        "resnet8": ["conv1.weight", "layer2.0.downsample.0.weight", "layer3.0.bn2.running_var", "fc.weight"],
        "wrn_16_2": ["conv1.weight", "block2.layer.0.convShortcut.weight", "bn1.weight", "fc.bias"],
        "vgg8": ["block0.0.weight", "block0.0.bias", "block4.1.running_mean", "classifier.weight"],
        "MobileNetV2": ["conv1.0.weight", "blocks.6.0.conv.7.weight", "conv2.1.weight", "classifier.0.weight"],
        "ShuffleV1": ["layer1.0.conv3.weight", "linear.weight"],
        "ShuffleV2": ["layer3.3.conv3.weight", "conv2.weight", "bn2.weight", "linear.weight"],
    }
    for name, keys in expected.items():
        state = cifar100_model(name).state_dict()
        assert set(keys) <= set(state), name


def test_mobilenetv1_imagenet():
    torch.manual_seed(0)
    model = create_model("mobilenetv1", num_classes=1000)
    assert count_parameters(model) == MOBILENETV1_PARAMS_1000
    check_feature_layers("mobilenetv1", model.train(), torch.randn(2, 3, 64, 64), 1000, 4)
    gray = create_model("mobilenetv1", num_classes=10, in_channels=1)
    with torch.no_grad():
        assert gray(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_resnet18_one_channel(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("weights must never be downloaded")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = create_model("torchvision:resnet18", num_classes=10, in_channels=1)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    assert model.fc.out_features == 10
    check_feature_layers("torchvision:resnet18", model, torch.randn(2, 1, 32, 32), 10, 4)

    rgb = create_model("torchvision:resnet18", num_classes=10)
    assert rgb.conv1.in_channels == 3


def test_unknown_names_raise_user_error():
    with pytest.raises(UserError, match="resnet18"):
        create_model("torchvision:not_a_model", num_classes=10)
    with pytest.raises(UserError, match="resnet20"):
        create_model("not_a_model", num_classes=10)
