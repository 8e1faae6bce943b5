"""End-to-end training on synthetic data: run folder, checkpoints, exact resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from softlabels.config import validate_config
from softlabels.engine import Trainer, train
from softlabels.engine.checkpoint import load_checkpoint, save_atomic, sha256_of
from softlabels.engine.schedule import lr_at
from softlabels.errors import CheckpointError, ConfigError, NonFiniteLossError


def test_teacher_then_wsl_writes_a_complete_run_folder(tmp_path, tiny, tiny_teacher):
    exp = validate_config(tiny(tmp_path, name="wsl", method={"name": "wsl"},
                               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}, epochs=2))
    summary = train(exp)
    rd = tmp_path / "wsl"
    for f in ("config.yaml", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "summary.json"):
        assert (rd / f).is_file(), f
    rows = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss_ce", "train_loss_wsl", "test_top1", "test_top5", "reg_fraction", "reg_fraction_t1",
                "wsl_weight_mean", "wsl_weight_hist", "ce_teacher"):
        assert key in rows[0], key
    assert 0 <= rows[0]["reg_fraction"] <= 1 and sum(rows[0]["wsl_weight_hist"]) == 192
    csv_header = (rd / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "test_top1" in csv_header and "wsl_weight_hist" not in csv_header
    saved = json.loads((rd / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["teacher"]["sha256"] == sha256_of(tiny_teacher)
    assert saved["best_top1"] == max(r["test_top1"] for r in rows) and saved["last_top1"] == rows[-1]["test_top1"]
    assert saved["environment"]["torch"] == torch.__version__ and saved["images_per_s"] > 0
    assert yaml.safe_load((rd / "config.yaml").read_text())["method"]["name"] == "wsl"
    last = load_checkpoint(rd / "last.pt")
    assert last["epoch"] == 2 and {"optimizers", "rng", "best", "config", "record"} <= set(last) and "main" in last["optimizers"]


def test_teacher_is_not_trained_during_distillation(tmp_path, tiny, tiny_teacher):
    exp = validate_config(tiny(tmp_path, name="kd", method={"name": "kd"},
                               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}, epochs=1))
    trainer = Trainer(exp)
    before = {k: v.clone() for k, v in trainer.method.teacher.state_dict().items()}
    opt_ids = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not opt_ids & {id(p) for p in trainer.method.teacher.parameters()}
    trainer.fit()
    for k, v in trainer.method.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_val_split_selects_best_on_validation(tmp_path, tiny):
    cfg = tiny(tmp_path, epochs=2)
    cfg["data"]["val_split"] = 0.25
    summary = train(validate_config(cfg))
    assert summary["best_selected_by"] == "val_top1" and summary["best_val_top1"] is not None


def test_existing_run_folder_is_never_overwritten(tmp_path, tiny):
    exp = validate_config(tiny(tmp_path, epochs=1))
    train(exp)
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        train(exp)


def test_resume_refuses_a_different_config(tmp_path, tiny):
    exp = validate_config(tiny(tmp_path, epochs=1))
    train(exp)
    other = validate_config({**tiny(tmp_path, epochs=1), "optim": {"lr": 0.01}})
    with pytest.raises(ConfigError, match="optim.lr"):
        train(other, resume_dir=tmp_path / "run")


def test_resume_without_checkpoint(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="no last.pt"):
        train(validate_config(tiny(tmp_path)), resume_dir=tmp_path / "nothing")


def test_non_finite_loss_names_epoch_step_and_terms(tmp_path, tiny, monkeypatch):
    from softlabels.methods.ce import CrossEntropy

    def broken(self, batch):
        return {"ce": batch.student_logits.sum() * float("nan")}

    monkeypatch.setattr(CrossEntropy, "loss_terms", broken)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1/\d+: loss=nan, ce=nan"):
        train(validate_config(tiny(tmp_path)))


def test_corrupt_checkpoints_are_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pt.*corrupt"):
        load_checkpoint(bad)
    good = tmp_path / "good.pt"
    save_atomic({"model": {"w": torch.ones(3)}}, good)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_teacher_checkpoint_mismatch_is_reported(tmp_path, tiny, tiny_teacher):
    cfg = tiny(tmp_path, name="kd", method={"name": "kd"}, teacher={"name": "resnet14", "checkpoint": str(tiny_teacher)})
    with pytest.raises(CheckpointError, match="resnet8.*resnet14"):
        Trainer(validate_config(cfg))


def test_lr_schedules():
    from softlabels.config import ScheduleConfig

    ms = ScheduleConfig(name="multistep", epochs=10, milestones=[5, 8], gamma=0.1)
    assert lr_at(ms, 1.0, 4, 0, 10) == 1.0
    assert lr_at(ms, 1.0, 5, 0, 10) == pytest.approx(0.1)
    assert lr_at(ms, 1.0, 9, 3, 10) == pytest.approx(0.01)
    cos = ScheduleConfig(name="cosine", epochs=10, warmup_epochs=2, milestones=[])
    assert lr_at(cos, 1.0, 0, 0, 10) == pytest.approx(0.05)  # first warm-up step
    assert lr_at(cos, 1.0, 1, 9, 10) == pytest.approx(1.0)  # end of warm-up
    assert lr_at(cos, 1.0, 6, 0, 10) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_at(cos, 1.0, 9, 10, 10) == pytest.approx(0.0, abs=1e-12)


def _run_cli(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "softlabels.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_and_resume_reaches_identical_weights(tmp_path, tiny, tiny_teacher):
    """Kill a WSL run after its first checkpoint, resume it, compare with an uninterrupted run."""
    def config(name):
        cfg = tiny(tmp_path, name=name, method={"name": "wsl"},
                   teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}, epochs=4)
        cfg["data"]["synthetic"]["train_size"] = 1536
        cfg["runtime"]["threads"] = 1
        cfg["schedule"] = {"name": "cosine", "epochs": 4, "warmup_epochs": 1}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    full = _run_cli(["train", str(config("full"))], tmp_path)
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()

    killed = _run_cli(["train", str(config("killed"))], tmp_path)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)  # let it get into the next epoch
    assert killed.poll() is None, "the run finished before it could be killed; make its epochs longer"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    interrupted_at = load_checkpoint(last)["epoch"]
    assert 1 <= interrupted_at < 4

    resumed = _run_cli(["train", "--resume", str(tmp_path / "killed")], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = [json.loads(r) for r in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    full_rows = [json.loads(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_top1"] for r in rows] == [r["test_top1"] for r in full_rows]


@pytest.mark.parametrize("amp,channels_last", [("bf16", True), ("fp16", False)])
def test_mixed_precision_and_channels_last(tmp_path, tiny, tiny_teacher, amp, channels_last):
    cfg = tiny(tmp_path, name=f"wsl_{amp}", method={"name": "wsl"},
               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}, epochs=1)
    cfg["runtime"].update(amp=amp, channels_last=channels_last)
    trainer = Trainer(validate_config(cfg))
    assert (trainer.scaler is not None) == (amp == "fp16")
    summary = trainer.fit()
    row = json.loads((tmp_path / f"wsl_{amp}" / "metrics.jsonl").read_text().splitlines()[0])
    assert all(isinstance(row[k], float) and row[k] == row[k] for k in ("train_loss", "train_loss_wsl", "test_loss"))
    assert 0 <= summary["last_top1"] <= 100
    state = load_checkpoint(tmp_path / f"wsl_{amp}" / "last.pt")
    assert (state["scaler"] is not None) == (amp == "fp16")
    assert all(v.dtype == torch.float32 for k, v in state["model"].items() if v.is_floating_point())


@pytest.mark.slow
def test_runtime_compile_matches_eager_and_saves_plain_weights(tmp_path, tiny, tiny_teacher):
    teacher = {"name": "resnet8", "checkpoint": str(tiny_teacher)}
    eager = train(validate_config(tiny(tmp_path, name="eager", method={"name": "wsl"}, teacher=teacher, epochs=1)))
    compiled = train(validate_config(tiny(tmp_path, name="compiled", method={"name": "wsl"}, teacher=teacher,
                                          epochs=1, runtime={"compile": True, "compile_backend": "aot_eager"})))
    rows = [json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[0]) for n in ("eager", "compiled")]
    assert rows[1]["train_loss"] == pytest.approx(rows[0]["train_loss"], rel=1e-4)
    assert compiled["last_top1"] == pytest.approx(eager["last_top1"], abs=2.0)
    state = load_checkpoint(tmp_path / "compiled" / "best.pt")
    assert not any("_orig_mod" in k for k in state["model"])  # loadable without torch.compile


def test_deferred_finiteness_check_names_the_first_bad_step():
    ok = torch.tensor([1.0, 0.5, 0.5])
    bad = torch.tensor([float("inf"), float("inf"), 0.5])
    Trainer._check_finite([ok, ok], ["ce", "kd"], 0, 1, 10)  # all finite: no error
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, step 8/10: loss=inf, ce=inf, kd=0.5"):
        Trainer._check_finite([ok, bad, ok], ["ce", "kd"], 2, 8, 10)  # steps 7, 8, 9 (1-based)


def test_per_sample_dump(tmp_path, tiny, tiny_teacher):
    cfg = tiny(tmp_path, name="dump", method={"name": "kd", "temperature": 2.0},
               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}, epochs=2)
    cfg["runtime"]["per_sample_dump"] = True
    train(validate_config(cfg))
    rows = [json.loads(r) for r in (tmp_path / "dump" / "metrics.jsonl").read_text().splitlines()]
    for epoch in (1, 2):
        d = torch.load(tmp_path / "dump" / "per_sample" / f"epoch_{epoch:04d}.pt", weights_only=True)
        assert d["epoch"] == epoch and float(d["temperature"]) == 2.0
        assert sorted(d["index"].tolist()) == list(range(192))  # every training sample once
        assert d["p_s"].dtype == torch.float16 and d["w"].shape == (192,)
        # the flag is p_s > p_t and its count is the epoch's reg_count
        assert int(d["regularization"].sum()) == rows[epoch - 1]["reg_count"]
        agree = (d["p_s"].float() > d["p_t"].float()) == d["regularization"]
        assert agree.float().mean() > 0.97  # float16 rounding can flip near-ties


def test_infodrop_from_config_and_finetune_phase(tmp_path, tiny):
    cfg = tiny(tmp_path, name="infodrop", epochs=2)
    cfg["student"]["infodrop"] = {"after": ["stem"], "drop_rate": 1.5, "temperature": 0.03, "finetune_epochs": 1}
    trainer = Trainer(validate_config(cfg))
    layers = list(trainer.method.student.infodrop_layers.values())
    assert len(layers) == 1
    seen = []
    original = trainer.train_one_epoch

    def spy(epoch):
        out = original(epoch)
        seen.append(layers[0].active)
        return out

    trainer.train_one_epoch = spy
    trainer.fit()
    assert seen == [True, False]  # InfoDrop in the first epoch, off in the fine-tuning epoch
    state = load_checkpoint(tmp_path / "infodrop" / "last.pt")
    assert not any("infodrop" in k for k in state["model"])  # no state: checkpoints load into a plain model


def test_method_diagnostics_reach_metrics(tmp_path, tiny, tiny_teacher):
    cfg = tiny(tmp_path, name="prokt", method={"name": "prokt"},
               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}, epochs=1)
    train(validate_config(cfg))
    row = json.loads((tmp_path / "prokt" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["prokt_teacher_drift"] > 0 and "prokt_teacher_kl" in row


# ----------------------------------------------------------------------------- fault injection
def _fault_child(cfg: dict, fault: str, at: int) -> None:
    """Forked child: train (resume when the folder holds a run) and SIGKILL itself at the chosen point.

    fault "save": in the ``at``-th checkpoint write, after half of the temp file is on disk;
    "metrics": in the ``at``-th metrics.jsonl append, after half of the line; "none": no fault.
    """
    import io as _io

    import softlabels.io as sio
    from softlabels.engine import checkpoint as ckpt_mod
    from softlabels.engine.run_dir import RunDir

    torch.set_num_threads(1)
    calls = {"save": 0, "metrics": 0}
    real_save, real_append = torch.save, sio.append_jsonl

    def die_in_save(obj, f, *a, **k):
        calls["save"] += 1
        if fault == "save" and calls["save"] == at:
            buf = _io.BytesIO()
            real_save(obj, buf)
            with open(f, "wb") as out:
                out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **k)

    def die_in_append(path, row):
        calls["metrics"] += 1
        if fault == "metrics" and calls["metrics"] == at:
            with open(path, "a") as out:
                out.write(json.dumps(row)[:20])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_append(path, row)

    ckpt_mod.torch.save = die_in_save
    sio.append_jsonl = die_in_append
    exp = validate_config(cfg)
    rd = RunDir(exp.run_dir)
    train(exp, resume_dir=rd.path if rd.is_run() else None)
    os._exit(0)  # skip pytest's atexit machinery in the forked child


def test_fault_injection_every_kill_resumes_bit_for_bit_or_restarts(tmp_path, tiny, capsys):
    """>= 20 seeded SIGKILLs of a tiny run (in checkpoint writes, in metrics appends, at random times);
    after each, re-running the same command (``--resume`` when the folder holds a run) must finish with
    the uninterrupted run's weights and metrics, bit for bit, without deleting anything by hand."""
    import multiprocessing as mp
    import random

    from softlabels.engine.run_dir import RunDir

    ctx = mp.get_context("fork")
    rng = random.Random(16)

    def config(name):
        cfg = tiny(tmp_path, name=name, epochs=3)
        cfg["data"]["synthetic"].update(train_size=64, test_size=32, image_size=8)
        cfg["data"]["batch_size"] = 16
        cfg["runtime"]["threads"] = 1
        return cfg

    def run(cfg, fault="none", at=0, kill_after=None):
        p = ctx.Process(target=_fault_child, args=(cfg, fault, at))
        p.start()
        p.join(timeout=kill_after)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        return p.exitcode

    train(validate_config(config("warmup")))  # imports and first-call costs paid once, before any fork
    t0 = time.perf_counter()
    train(validate_config(config("reference")))  # in this process: the forked runs must match it bit for bit
    duration = time.perf_counter() - t0
    ref = RunDir(tmp_path / "reference")
    ref_model = ref.load_checkpoint()["model"]
    ref_top1 = [r["test_top1"] for r in ref.metrics()]
    saves = 3 + sum(1 for r in ref.metrics() if r["epoch"] == ref.load_checkpoint("best")["epoch"])  # last.pt x3 + best.pt
    counts = {"kills": 0, "resumed": 0, "restarted": 0}
    for trial in range(20):
        cfg = config(f"trial{trial}")
        rd = RunDir(tmp_path / f"trial{trial}")
        fault = rng.choice(["save", "metrics", "timed"])
        if fault == "save":
            code = run(cfg, "save", rng.randint(1, saves))
        elif fault == "metrics":
            code = run(cfg, "metrics", rng.randint(1, 3))
        else:
            code = run(cfg, kill_after=rng.uniform(0.02, 1.2 * duration))
        if code == -signal.SIGKILL:
            counts["kills"] += 1
        counts["resumed" if rd.has_checkpoint() else "restarted"] += 1
        assert run(cfg) == 0, f"trial {trial} ({fault}): the re-run failed"
        state = rd.load_checkpoint()
        assert state["epoch"] == 3 and all(torch.equal(state["model"][k], v) for k, v in ref_model.items()), trial
        assert [r["test_top1"] for r in rd.metrics()] == ref_top1, trial
        assert rd.is_finished() and not list(rd.path.glob(".*.tmp"))
    with capsys.disabled():
        print(f"\nfault injection: {counts['kills']} kills in 20 trials; re-runs resumed {counts['resumed']}, "
              f"restarted {counts['restarted']}; all equal to the uninterrupted run")
    assert counts["kills"] >= 20 - 3  # a timed kill may come after the run has finished


@pytest.mark.parametrize("mode", ["when_best", "at_end"])
def test_test_eval_modes_skip_test_passes_but_keep_best_and_last(tmp_path, tiny, mode):
    """runtime.test_eval when_best / at_end: same weights, same best/last test top-1 as every_epoch; the test set
    is evaluated only at a new validation best and the last epoch (when_best) or only at the last epoch, with
    the best weights' metrics on that row as best_test_* (at_end)."""
    def run(name, test_eval):
        cfg = tiny(tmp_path, name=name, epochs=8, runtime={"progress": False, "device": "cpu", "test_eval": test_eval})
        cfg["data"]["val_split"] = 32
        return train(validate_config(cfg)), [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]

    every, rows_every = run("every", "every_epoch")
    best, rows_best = run("best", mode)
    assert [r["val_top1"] for r in rows_best] == [r["val_top1"] for r in rows_every]
    running, new_best = -1.0, []
    for r in rows_every:
        new_best.append(r["val_top1"] > running)
        running = max(running, r["val_top1"])
    last = [i == len(rows_every) - 1 for i in range(len(rows_every))]
    expected = [b or e for b, e in zip(new_best, last)] if mode == "when_best" else last
    assert ["test_top1" in r for r in rows_best] == expected and not all(expected)
    for key in ("best_top1", "best_top5", "last_top1", "best_epoch"):
        assert best[key] == every[key], key
    if mode == "at_end" and every["best_epoch"] != len(rows_every):
        assert rows_best[-1]["best_test_top1"] == every["best_top1"]
    w_every = load_checkpoint(tmp_path / "every" / "last.pt")["model"]
    w_best = load_checkpoint(tmp_path / "best" / "last.pt")["model"]
    assert all(torch.equal(w_every[k], w_best[k]) for k in w_every)  # the last weights are put back
    saved_runtime = yaml.safe_load((tmp_path / "every" / "config.yaml").read_text())["runtime"]
    assert "test_eval" not in saved_runtime  # the default is omitted, so older run folders resume unchanged


def test_test_eval_at_end_after_a_resume_reads_the_best_weights_from_best_pt(tmp_path, tiny):
    """A run resumed after its best epoch has no best weights in memory: at_end evaluates best.pt's."""
    from softlabels.callbacks import Callback

    class Scramble(Callback):  # wrecks the weights before epochs 7 and 8, so the best epoch comes earlier
        def on_epoch_start(self, trainer, epoch):
            if epoch >= 6:
                gen = torch.Generator().manual_seed(epoch)
                with torch.no_grad():
                    for p in trainer.method.student.parameters():
                        p.add_(torch.randn(p.shape, generator=gen) * 3.0)

    class StopAfter(Callback):
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 6:
                raise KeyboardInterrupt

    def exp(name, test_eval):
        c = tiny(tmp_path, name=name, epochs=8, runtime={"progress": False, "device": "cpu", "test_eval": test_eval})
        c["data"]["val_split"] = 32
        return validate_config(c)

    every = train(exp("every", "every_epoch"), callbacks=[Scramble()])
    assert every["best_epoch"] <= 6
    with pytest.raises(KeyboardInterrupt):
        train(exp("resumed", "at_end"), callbacks=[Scramble(), StopAfter()])
    resumed = train(exp("resumed", "at_end"), resume_dir=tmp_path / "resumed", callbacks=[Scramble()])
    for key in ("best_top1", "best_top5", "last_top1", "best_epoch"):
        assert resumed[key] == every[key], key


def test_test_eval_when_best_needs_a_validation_split(tmp_path, tiny):
    with pytest.raises(ConfigError, match="data.val_split"):
        validate_config(tiny(tmp_path, runtime={"progress": False, "device": "cpu", "test_eval": "when_best"}))


def test_best_test_metrics_reads_the_best_row_else_the_last_rows_best_test_fields():
    from softlabels.engine.summary import best_test_metrics

    assert best_test_metrics({"test_top1": 80.0, "test_top5": 99.0}, {"best_test_top1": 70.0}) == {
        "top1": 80.0, "top5": 99.0}
    assert best_test_metrics({"val_top1": 81.0}, {"best_test_top1": 82.5, "best_test_top5": 99.5}) == {
        "top1": 82.5, "top5": 99.5}  # test_eval at_end: the best epoch was not tested
    assert best_test_metrics({"test_top1": float("nan")}, {"best_test_top1": 1.0})["top1"] == 1.0
    assert best_test_metrics({}, {}) == {"top1": None, "top5": None}
