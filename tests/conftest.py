"""Shared fixtures: tiny synthetic experiments that train in seconds on CPU."""
from __future__ import annotations

import copy

import pytest
import torch

torch.set_num_threads(1)  # 2 shared cores: oversubscribed threads slow tests 10-100x

TINY_DATA = {
    "name": "synthetic",
    "batch_size": 32,
    "eval_batch_size": 128,
    "crop_padding": 2,
    "synthetic": {"num_classes": 4, "image_size": 12, "channels": 3, "train_size": 192, "test_size": 64},
}


def tiny_experiment(tmp_path, name="run", method=None, teacher=None, epochs=2, **extra) -> dict:
    """A raw config dict for a tiny synthetic run in ``tmp_path``."""
    cfg = {
        "name": name,
        "seed": 0,
        "output_dir": str(tmp_path),
        "data": copy.deepcopy(TINY_DATA),
        "student": {"name": "resnet8"},
        "method": method or {"name": "ce"},
        "optim": {"lr": 0.05},
        "schedule": {"name": "multistep", "epochs": epochs, "milestones": [epochs]},
        "runtime": {"progress": False, "device": "cpu"},
    }
    if teacher is not None:
        cfg["teacher"] = teacher
    for k, v in extra.items():
        cfg[k] = v
    return cfg


@pytest.fixture
def tiny():
    return tiny_experiment


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A resnet8 teacher trained for 3 epochs on the tiny synthetic data: path to its best.pt."""
    from softlabels.config import validate_config
    from softlabels.engine import train

    root = tmp_path_factory.mktemp("teacher")
    exp = validate_config(tiny_experiment(root, name="teacher", epochs=3))
    train(exp)
    return root / "teacher" / "best.pt"
