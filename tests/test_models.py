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


# ----------------------------------------------------------------------------- timm-like create_model
def test_list_models_wildcards_and_pretrained():
    assert list_models("resnet8*") == ["resnet8", "resnet8x4"]
    assert list_models("nothing*") == []
    assert list_models(pretrained=True) == ["resnet20"]  # the shipped Fashion-MNIST teacher
    assert list_models("resnet2?", pretrained=True) == ["resnet20"]
    tv = list_models("torchvision:resnet1*", pretrained=True)
    assert "torchvision:resnet18" in tv and all(n.startswith("torchvision:resnet1") for n in tv)


def test_pretrained_true_returns_the_shipped_teacher():
    from softlabels.engine.checkpoint import load_checkpoint

    model = create_model("resnet20", num_classes=10, in_channels=1, pretrained=True)
    shipped = load_checkpoint("softlabels:teachers/fashion_mnist_resnet20.pt")["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in shipped.items())
    assert create_model("resnet20", pretrained=True).conv1.in_channels == 1  # classes/channels from the weights
    with pytest.raises(UserError, match=r"no shipped weights for 'resnet8'.*resnet20 \(10 classes"):
        create_model("resnet8", num_classes=10, pretrained=True)
    with pytest.raises(UserError, match="num_classes=100"):
        create_model("resnet20", num_classes=100, pretrained=True)


def test_model_kwargs_pass_through_and_unknown_ones_are_named():
    with pytest.raises(UserError, match=r"model 'resnet8' has no option 'depth_multiplier'"):
        create_model("resnet8", num_classes=10, depth_multiplier=2)
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, drop_rate=0.5)
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)  # eval: no dropout
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # training: dropout on the classifier input
    with pytest.raises(UserError, match="drop_rate"):
        create_model("resnet8", num_classes=10, drop_rate=1.5)

    @functools.partial(register_test_model, "test_kwargs_net")
    def factory(num_classes, in_channels=3, width=4):
        net = nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                            nn.Linear(width, num_classes))
        return net

    assert create_model("test_kwargs_net", num_classes=3, width=7)[0].out_channels == 7


def register_test_model(name, factory):
    from softlabels.models.base import MODELS

    if name not in MODELS:
        MODELS.register(name)(factory)
    return factory


def test_pretrained_path_loads_weights_only_files(tmp_path):
    torch.manual_seed(1)
    source = create_model("resnet8", num_classes=5)
    torch.save({"model": source.state_dict(), "num_classes": 5}, tmp_path / "w.pt")
    model = create_model("resnet8", pretrained=str(tmp_path / "w.pt"))  # class count from the file
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    assert torch.equal(create_model("resnet8", 5, pretrained=tmp_path / "bare.pth").fc.weight, source.fc.weight)

    import argparse

    torch.save({"model": argparse.Namespace(code="not weights")}, tmp_path / "evil.pt")  # weights_only refuses it
    from softlabels.errors import CheckpointError

    with pytest.raises(CheckpointError, match="evil.pt"):
        create_model("resnet8", 5, pretrained=str(tmp_path / "evil.pt"))
    with pytest.raises(CheckpointError, match="does not fit|do not fit"):
        create_model("resnet20", 5, pretrained=str(tmp_path / "w.pt"))


def test_safetensors_file_loads_in_one_call(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    torch.manual_seed(2)
    source = create_model("resnet8", num_classes=4, in_channels=1)
    safetensors.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "s.safetensors"))
    model = create_model("resnet8", num_classes=4, in_channels=1, pretrained=str(tmp_path / "s.safetensors"))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), source.eval()(x))


def test_repdistiller_checkpoint_loads_as_teacher(tmp_path):
    """Community CIFAR-100 teachers ({"model": state_dict, "epoch", "best_acc", "optimizer"}) load directly."""
    from softlabels.config import validate_config
    from softlabels.engine.trainer import load_teacher

    torch.manual_seed(3)
    net = create_model("resnet8", num_classes=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 3, 12, 12)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": net.state_dict(), "best_acc": torch.tensor(72.3),
                "optimizer": opt.state_dict()}, path)
    dp = tmp_path / "dataparallel.pth"  # saved from nn.DataParallel: "module." prefixes
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, dp)
    from conftest import tiny_experiment

    for file in (path, dp):
        exp = validate_config(tiny_experiment(tmp_path, method={"name": "kd"},
                                              teacher={"name": "resnet8", "checkpoint": str(file)}))
        teacher, info = load_teacher(exp, 4, 3, torch.device("cpu"))
        assert all(torch.equal(teacher.state_dict()[k], v) for k, v in net.state_dict().items())
        assert info["checkpoint"] == str(file) and len(info["sha256"]) == 64


def test_torchvision_weight_enum_from_the_torch_home_cache(tmp_path, monkeypatch):
    """`torchvision:resnet18` + IMAGENET1K_V1 reads $TORCH_HOME/hub/checkpoints/<file>; never downloads here."""
    def no_download(*args, **kwargs):
        raise AssertionError("weights must not be downloaded when cached")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(4)
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    model = create_model("torchvision:resnet18", pretrained="IMAGENET1K_V1")
    assert model.fc.out_features == 1000
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert set(model.feature_layers) >= {"stem", "stage4", "pooled", "logits"}
    with pytest.raises(UserError, match="IMAGENET1K_V7.*IMAGENET1K_V1"):
        create_model("torchvision:resnet18", pretrained="IMAGENET1K_V7")
    with pytest.raises(UserError, match="1000 classes, not 10"):
        create_model("torchvision:resnet18", num_classes=10, pretrained="IMAGENET1K_V1")


def test_torchvision_weights_as_teacher_checkpoint(tmp_path, monkeypatch):
    """teacher.checkpoint: torchvision:ResNet18_Weights.IMAGENET1K_V1 reads the torch hub cache file."""
    from conftest import tiny_experiment
    from softlabels.config import validate_config
    from softlabels.engine.checkpoint import sha256_of
    from softlabels.engine.trainer import load_teacher
    from softlabels.resources import resolve_path

    def no_network(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(UserError, match=r"resnet18-f37072fd\.pth is not cached.*place the file there"):
        resolve_path(spec)
    torch.manual_seed(5)
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)  # the failed lookup above may have created it
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    assert resolve_path("torchvision:resnet18.IMAGENET1K_V1") == resolve_path(spec) == cache / "resnet18-f37072fd.pth"
    raw = tiny_experiment(tmp_path, method={"name": "kd"}, teacher={"name": "torchvision:resnet18", "checkpoint": spec})
    raw["data"]["synthetic"]["num_classes"] = 1000
    raw["data"]["synthetic"]["train_size"] = 1000
    exp = validate_config(raw)
    teacher, info = load_teacher(exp, 1000, 3, torch.device("cpu"))
    assert torch.equal(teacher.fc.weight, reference.fc.weight)
    assert info["checkpoint"] == spec and info["sha256"] == sha256_of(cache / "resnet18-f37072fd.pth")
    with pytest.raises(UserError, match="unknown torchvision weights"):
        resolve_path("torchvision:ResNet18_Weights.NOPE")


def test_list_models_command_shows_torchvision_names_and_shipped_weights(capsys):
    from softlabels.cli import main

    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "resnet20: fashion_mnist, 10 classes, 1 channel(s)" in out
    assert "softlabels:teachers/fashion_mnist_resnet20.pt" in out
    assert "torchvision:resnet18 [IMAGENET1K_V1]" in out and "torchvision:resnet50 [IMAGENET1K_V1 IMAGENET1K_V2]" in out
