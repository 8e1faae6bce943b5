"""``softlabels demo``: the quick run distils from the shipped teacher, and says what its numbers can't show."""
from __future__ import annotations

import json
import shutil

import pytest

from softlabels import demo


@pytest.fixture
def fake_training(monkeypatch):
    """Record the experiments the demo would train instead of training them."""
    trained = []

    def fake_run(exp):
        trained.append(exp)
        if exp.name == "teacher":  # the students are validated against its checkpoint
            exp.run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(demo.shipped_teacher(), exp.run_dir / "best.pt")
        return {"best_top1": 50.0, "last_top1": 49.0}

    monkeypatch.setattr(demo, "run_or_resume", fake_run)
    return trained


def test_quick_demo_uses_the_shipped_teacher(tmp_path, fake_training, capsys):
    shipped = demo.shipped_teacher()
    assert shipped is not None and shipped.is_file()  # committed with its sha256
    table = demo.run_demo(tmp_path / "d", quick=True)
    names = [e.name for e in fake_training]
    assert names == ["student", "kd", "wsl"]  # no teacher is trained
    for exp in fake_training[1:]:
        assert exp.teacher.checkpoint == str(shipped) and exp.schedule.epochs == 2
        assert exp.data.train_subset == 0.02
    manifest = json.loads((demo.ASSETS / f"{demo.TEACHER_NAME}.json").read_text())
    assert table["teacher (resnet20)"]["last_top1"] == manifest["last_top1"]
    captured = capsys.readouterr()
    assert "shipped teacher" in captured.err and "do not rank the methods" in captured.out
    assert "chosen on the test set" in captured.out
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert results["quick"] is True and "do not rank" in results["note"]


def test_quick_demo_without_the_shipped_teacher_says_its_numbers_mean_nothing(tmp_path, fake_training, capsys):
    demo.run_demo(tmp_path / "d", quick=True, retrain_teacher=True)
    assert [e.name for e in fake_training] == ["teacher", "student", "kd", "wsl"]
    assert fake_training[1].teacher is None and fake_training[2].teacher.checkpoint.endswith("teacher/best.pt")
    out = capsys.readouterr().out
    assert "WITHOUT the shipped teacher (--retrain-teacher was given)" in out and "mean nothing" in out


def test_full_demo_settings_are_unchanged(tmp_path, fake_training):
    demo.run_demo(tmp_path / "d")
    student, kd, wsl = fake_training
    assert [e.schedule.epochs for e in fake_training] == [12, 12, 12] and kd.data.train_subset == 0.1
    assert kd.method.model_dump() == {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    assert wsl.method.model_dump() == {"name": "wsl", "temperature": 4.0, "alpha": 2.25}
    assert student.method.name == "ce" and student.student.name == "resnet8"
