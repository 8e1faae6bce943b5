"""Contracts every registered method, model and file-free dataset must keep (tiny inputs, 1 thread).

Methods (through the Trainer, on tiny synthetic data): one step; gradients reach the student and
auxiliary modules only; the teacher is frozen and in eval mode; the full training state survives a
save/load round trip (``weights_only``); resuming across an epoch boundary is exact.
Models: build, forward, declared features. Datasets: batches, indices, seeded order, or a one-line
error naming the missing files.
"""
from __future__ import annotations

import io

import pytest
import torch

from softlabels.config import validate_config
from softlabels.data import build_data, list_datasets
from softlabels.errors import UserError
from softlabels.features import FeatureCapture
from softlabels.methods import get_method, list_methods
from softlabels.models import create_model, list_models

CLASSES = 4


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory):
    """An untrained resnet8 saved as a softlabels checkpoint (contracts need no accurate teacher)."""
    from softlabels.engine.checkpoint import FORMAT, save_atomic

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("contract_teacher") / "teacher.pt"
    model = create_model("resnet8", CLASSES, 3)
    save_atomic({"format": FORMAT, "model": model.state_dict(), "model_name": "resnet8", "num_classes": CLASSES,
                 "in_channels": 3}, path)
    return path


def _trainer(tmp_path, name, teacher_ckpt):
    from softlabels.engine import Trainer

    cls = get_method(name)
    cfg = {
        "name": name, "seed": 0, "output_dir": str(tmp_path),
        "data": {"name": "synthetic", "batch_size": 16, "eval_batch_size": 32, "crop_padding": 1, "val_split": 0.25,
                 "synthetic": {"num_classes": CLASSES, "image_size": 8, "channels": 3, "train_size": 48,
                               "test_size": 16}},
        "student": {"name": "resnet8"}, "method": {"name": name},
        "optim": {"lr": 0.05}, "schedule": {"name": "constant", "epochs": 2},
        "runtime": {"progress": False, "device": "cpu", "threads": 1},
    }
    if cls.requires_teacher:
        cfg["teacher"] = {"name": "resnet8", "checkpoint": str(teacher_ckpt)}
    return Trainer(validate_config(cfg))


def _ids(module):
    return {id(p) for p in module.parameters()}


def _student_weights(trainer):
    return {k: v.clone() for k, v in trainer.method.student.state_dict().items()}


@pytest.mark.parametrize("name", list_methods())
def test_method_contract(tmp_path, random_teacher, name):
    trainer = _trainer(tmp_path / "a", name, random_teacher)
    method = trainer.method
    teacher = method.teacher
    # the optimizers hold student/auxiliary parameters only, the main one every trainable parameter
    allowed = _ids(method.student) | _ids(method.auxiliary)
    for opt in trainer.optimizers.values():
        assert {id(p) for g in opt.param_groups for p in g["params"]} <= allowed, name
    main = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in method.trainable_parameters()} == main
    # one step by hand: gradients reach the student (and only student/auxiliary parameters)
    method.set_epoch(0)
    method.train()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()} if teacher is not None else {}
    images, targets, indices = next(iter(trainer.data.train))
    out = method(images, targets, indices)
    assert out.logits.shape == (images.shape[0], CLASSES) and out.terms
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.terms.values()), name
    sum(t.float() for t in out.terms.values()).backward()
    with_grad = {id(p) for p in method.parameters() if p.grad is not None}
    assert with_grad and with_grad <= allowed, name
    if method.init_epochs == 0:  # an initialisation phase (AB, FSP, FT, DFA) may train auxiliary modules only
        assert with_grad & _ids(method.student), name
    if teacher is not None:
        assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
        assert all(p.grad is None for p in teacher.parameters())
        for k, v in teacher.state_dict().items():  # weights and BatchNorm statistics unchanged
            assert torch.equal(v, teacher_before[k]), (name, k)
    trainer.optimizer.zero_grad(set_to_none=True)
    # exact resume across an epoch: save after epoch 1 (through bytes, weights_only), continue elsewhere
    stats, _ = trainer.train_one_epoch(0)
    buf = io.BytesIO()
    torch.save(trainer.full_state({"epoch": 1, **stats}), buf)
    trainer.train_one_epoch(1)
    expected = _student_weights(trainer)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = _trainer(tmp_path / "b", name, random_teacher)
    other.load_state(state)
    assert other.start_epoch == 1
    for k, v in other.method.auxiliary.state_dict().items():  # round trip of the auxiliary state
        assert torch.equal(v, state["auxiliary"][k]), (name, k)
    other.train_one_epoch(1)
    for k, v in _student_weights(other).items():
        assert torch.equal(v, expected[k]), (name, k)


def _cheap_models():
    """One name per model class at most ~12M parameters (aliases and the big ones left out)."""
    return [n for n in list_models() if n not in {"MobileNetV1", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50",
                                                 "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"}]


@pytest.mark.parametrize("name", _cheap_models())
def test_model_contract(name):
    torch.manual_seed(0)
    model = create_model(name, 7, 3).eval()
    layers = getattr(model, "feature_layers", {})
    capture = FeatureCapture(model, list(layers)) if layers else None
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all(), name
    if capture is not None:
        assert set(capture.features) == set(layers), name  # every declared feature is produced
        if "logits" in layers:
            assert torch.equal(capture.features["logits"], logits)
        capture.remove()


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_contract(tmp_path, name):
    if name != "synthetic":  # datasets read from files: a missing folder is a one-line error naming it
        with pytest.raises(UserError, match="nowhere") as err:
            build_data({"name": name, "root": str(tmp_path / "nowhere")}, device="cpu", seed=0)
        assert "\n" not in str(err.value)
        return
    cfg = {"name": "synthetic", "batch_size": 8, "eval_batch_size": 16, "val_split": 0.25,
           "synthetic": {"num_classes": 3, "image_size": 6, "channels": 2, "train_size": 24, "test_size": 9}}
    data = build_data(cfg, device="cpu", seed=0)
    assert data.info.num_classes == 3 and data.info.in_channels == 2

    def epoch(e):
        data.train.set_epoch(e)
        return [(x.clone(), y.clone(), i.clone()) for x, y, i in data.train]

    first = epoch(0)
    for images, targets, indices in first:
        assert images.dtype == torch.float32 and images.shape[1:] == (2, 6, 6)
        assert targets.dtype == torch.int64 and indices.dtype == torch.int64
        assert images.shape[0] == targets.shape[0] == indices.shape[0]
        assert int(targets.min()) >= 0 and int(targets.max()) < 3
    seen = torch.cat([i for _, _, i in first])
    assert len(set(seen.tolist())) == len(seen) == 18  # 24 minus the validation quarter, each once
    assert all(torch.equal(a[2], b[2]) and torch.equal(a[0], b[0]) for a, b in zip(first, epoch(0)))  # pure in epoch
    assert not all(torch.equal(a[2], b[2]) for a, b in zip(first, epoch(1)))  # and a new order next epoch
    val = torch.cat([i for _, _, i in data.val])
    assert not set(val.tolist()) & set(seen.tolist())  # validation held out of training
    assert sum(int(y.numel()) for _, y, _ in data.test) == 9
