"""What a person sees: header, epoch lines, bar, summary, train.log, --quiet, Ctrl-C hint, one summary under DDP."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import warnings

import pytest
import yaml

from softlabels.callbacks import Callback
from softlabels.callbacks.console import duration, set_quiet
from softlabels.cli import main
from softlabels.config import validate_config
from softlabels.engine import train

CONTROL = re.compile(r"[\r\x1b]")  # carriage returns and ANSI escapes: what a bar leaves in a log


def write_cfg(tmp_path, cfg) -> str:
    path = tmp_path / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(autouse=True)
def _loud():
    set_quiet(False)
    yield
    set_quiet(False)


class WarnOnce(Callback):
    """A user callback that raises a Python warning, as a library might."""

    def on_epoch_end(self, trainer, record):
        warnings.warn("a library warning during the run", UserWarning, stacklevel=1)


def test_non_tty_run_prints_plain_lines_that_train_log_keeps(tmp_path, tiny, capsys):
    cfg = tiny(tmp_path, name="plain", epochs=2)
    cfg["runtime"]["progress"] = True  # a bar is asked for, but stderr is not a terminal
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = warnings.showwarning
        summary = train(validate_config(cfg), callbacks=[WarnOnce()])
        assert warnings.showwarning is before  # the train.log hook is gone with the run
    err = capsys.readouterr().err
    assert not CONTROL.search(err), "a non-terminal run must not print bar control characters"
    run = tmp_path / "plain"
    lines = [line for line in err.splitlines() if line.strip()]
    # header: device/threads, parameter counts, data sizes, run folder
    assert any(line.startswith("device cpu") and "torch threads" in line for line in lines)
    assert any(line.startswith("student resnet8:") and "parameters" in line and "auxiliary" in line for line in lines)
    assert any("train 192 / val none / test 64" in line for line in lines)
    assert any(f"run folder {run}" in line for line in lines)
    # no validation split: said plainly on the console, in the summary and in summary.json
    assert any(line.startswith("warning: no validation split") and "TEST set" in line for line in lines)
    assert summary["best_selected_on_test_set"] is True and "optimistic" in summary["best_selection_note"]
    assert json.loads((run / "summary.json").read_text())["best_selected_on_test_set"] is True
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "ETA" in epoch_lines[0] and "loss" in epoch_lines[1]
    assert any(line.startswith("done:") and "TEST set (optimistic" in line for line in lines)
    # train.log: every console line (warnings included), with time stamps
    log = (run / "train.log").read_text()
    for line in lines:
        if "a library warning" in line or line.startswith("  warnings.warn"):
            continue  # Python prints its own warning format; the file keeps the formatted warning below
        assert line in log, line
    assert re.search(r"\d\d:\d\d:\d\d warning: .*UserWarning: a library warning during the run", log)
    assert log.splitlines()[0].startswith("===== run plain started")


def test_resume_appends_to_train_log_below_a_separator(tmp_path, tiny, capsys):
    cfg = tiny(tmp_path, name="again", epochs=1)
    cfg["data"]["val_split"] = 0.25
    train(validate_config(cfg))
    first = (tmp_path / "again" / "train.log").read_text()
    assert "no validation split" not in first and "chosen on the validation split" in first
    assert main(["train", "--resume", str(tmp_path / "again"), "schedule.epochs=2"]) == 0
    log = (tmp_path / "again" / "train.log").read_text()
    assert log.startswith(first)
    rest = log[len(first):]
    assert re.search(r"===== run again resumed after epoch 1/2 ", rest)
    assert "resumed after epoch 1/2" in capsys.readouterr().err  # the header says it too
    assert "epoch   2/2" in rest and "epoch   1/2" not in rest


def test_quiet_console_keeps_the_file_complete(tmp_path, tiny, capsys):
    path = write_cfg(tmp_path, tiny(tmp_path, name="quiet", epochs=1))
    assert main(["train", "--quiet", path]) == 0
    captured = capsys.readouterr()
    assert "epoch   1/1" not in captured.err and "done:" not in captured.err
    assert captured.err.startswith("warning: no validation split")  # warnings still shown
    assert json.loads(captured.out.strip().splitlines()[-1])["name"] == "quiet"  # the result line on stdout
    log = (tmp_path / "quiet" / "train.log").read_text()
    assert "epoch   1/1" in log and "done:" in log


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_bar_stays_with_running_means_and_run_eta(tmp_path, tiny, monkeypatch):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    cfg = tiny(tmp_path, name="bar", epochs=2)
    cfg["runtime"]["progress"] = True
    train(validate_config(cfg))
    text = term.getvalue()
    rows = [json.loads(line) for line in (tmp_path / "bar" / "metrics.jsonl").read_text().splitlines()]
    screen = [part for line in text.split("\n") for part in line.split("\r")]
    for row in rows:
        final = [s for s in screen if s.startswith(f"epoch {row['epoch']}/2") and "6/6" in s]
        assert final, f"bar of epoch {row['epoch']} not completed on screen"
        # the live running mean at the last step is the epoch's mean loss and training top-1
        loss, top1 = re.search(r"loss (\d+\.\d+) · train (\d+\.\d+)%", final[-1]).groups()
        assert float(loss) == pytest.approx(row["train_loss"], abs=2e-4)
        assert float(top1) == pytest.approx(row["train_top1"], abs=0.01)
        assert "run ETA" in final[-1]
    # leave=True: each finished bar ends with a newline and is followed by its epoch line
    assert re.search(r"6/6[^\n]*\n(epoch\s+1/2 )", text)


def test_ctrl_c_hint_names_the_actual_run_folder(tmp_path, tiny, monkeypatch, capsys):
    from softlabels.engine.trainer import Trainer

    original, calls = Trainer._step, []

    def ctrl_c_at_step_2_of_epoch_2(self, loss):  # 6 steps per epoch
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return original(self, loss)

    monkeypatch.setattr(Trainer, "_step", ctrl_c_at_step_2_of_epoch_2)
    out_dir = tmp_path / "elsewhere"
    path = write_cfg(tmp_path, tiny(out_dir, name="stopped", epochs=2))
    assert main(["train", path]) == 130
    err = capsys.readouterr().err
    run = out_dir / "stopped"
    hint = f"softlabels train --resume {run}"
    assert err.count(hint) == 1 and "RUN_DIR" not in err and "during epoch 2" in err and "(epoch 1)" in err
    assert hint in (run / "train.log").read_text()


def test_ctrl_c_before_a_checkpoint_says_there_is_nothing_to_resume(tmp_path, tiny, monkeypatch, capsys):
    from softlabels.engine.trainer import Trainer

    def interrupted(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_one_epoch", interrupted)
    path = write_cfg(tmp_path, tiny(tmp_path, name="early", epochs=1))
    assert main(["train", path]) == 130
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "the same command starts it over" in err and "--resume" not in err
    monkeypatch.undo()
    assert main(["train", path]) == 0  # as the notice says; the Trainer's restart warning reaches train.log
    log = (tmp_path / "early" / "train.log").read_text()
    assert "nothing to resume" in log
    again = log[log.index("===== run early started again"):]
    assert "warning: " in again and "starting it over" in again and "done:" in again


def test_other_ranks_show_only_warnings_with_their_rank(capsys):
    from softlabels.callbacks.console import setup_console

    log = setup_console(rank=1)
    try:
        log.info("an epoch line")
        log.warning("something odd")
    finally:
        setup_console(rank=0)
    assert capsys.readouterr().err == "[rank 1] warning: something odd\n"


def test_no_second_console_handler_when_root_logging_prints(capsys):
    import logging

    from softlabels.callbacks import console

    log = logging.getLogger("softlabels")
    ours = [h for h in log.handlers if isinstance(h, console._ConsoleHandler)]
    for h in ours:
        log.removeHandler(h)
    root_handler = logging.StreamHandler(sys.stderr)  # the user's logging.basicConfig()
    logging.getLogger().addHandler(root_handler)
    try:
        console.setup_console()
        assert not any(isinstance(h, console._ConsoleHandler) for h in log.handlers)
        log.info("once")
        assert capsys.readouterr().err == "once\n"
    finally:
        logging.getLogger().removeHandler(root_handler)
        for h in ours:
            log.addHandler(h)


def test_duration_text():
    assert [duration(s) for s in (4.4, 65, 3725, None)] == ["4s", "1m05s", "1h02m", "?"]


@pytest.mark.slow
def test_torchrun_prints_one_summary(tmp_path, tiny):
    cfg = tiny(tmp_path, name="ddp", epochs=1)
    cfg["runtime"]["threads"] = 1
    path = write_cfg(tmp_path, cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "softlabels.cli", "train", path]
    out = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1 and results[0]["best_top1"] is not None
    assert out.stderr.count("done:") == 1 and out.stderr.count("epoch   1/1") == 1
    assert "[rank 1]" not in out.stderr  # the other rank is quiet (it has no warnings to show)
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert log.count("done:") == 1 and "2 processes" in log
