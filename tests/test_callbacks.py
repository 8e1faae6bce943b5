"""The callback contract: registry, options, build from config entries."""
import pytest

import softlabels
from softlabels.callbacks import Callback, CallbackParams, build_callbacks, register_callback, sort_callbacks
from softlabels.errors import ConfigError


class _EveryNParams(CallbackParams):
    every: int = 1


@register_callback("test_every_n")
class _EveryN(Callback):
    Params = _EveryNParams
    order = 50


def test_public_names():
    assert softlabels.Callback is Callback
    from softlabels.engine.run_dir import RunDir

    assert softlabels.RunDir is RunDir


def test_build_callbacks_from_names_options_and_instances():
    mine = Callback()
    built = build_callbacks(["test_every_n", {"name": "test_every_n", "every": 3}, mine])
    assert [type(c) for c in built] == [_EveryN, _EveryN, Callback]
    assert built[0].params.every == 1 and built[1].params.every == 3 and built[2] is mine
    assert sort_callbacks(built) == [built[0], built[1], mine]  # order 50 before the default 100


def test_build_callbacks_errors_name_the_entry():
    with pytest.raises(ConfigError, match=r"callbacks\[0\]: unknown callback 'nope'"):
        build_callbacks(["nope"])
    with pytest.raises(ConfigError, match=r"callbacks\[1\] \(test_every_n\): every"):
        build_callbacks(["test_every_n", {"name": "test_every_n", "every": "x"}])
    with pytest.raises(ConfigError, match=r"callbacks\[0\] \(test_every_n\): typo"):
        build_callbacks([{"name": "test_every_n", "typo": 1}])
    with pytest.raises(ConfigError, match=r"loggers\[0\]: unknown logger"):
        build_callbacks(["test_every_n"], kind="logger")


class _Recorder(Callback):
    """Records every event; adds a field to the record before the checkpoint and metric files (order 40)."""

    order = 40

    def __init__(self):
        super().__init__()
        self.events = []

    def on_fit_start(self, trainer):
        self.events.append(("fit_start", trainer.start_epoch))

    def on_epoch_start(self, trainer, epoch):
        self.events.append(("epoch_start", epoch))

    def on_train_batch_end(self, trainer, step_output, batch):
        assert step_output.logits.shape[0] == batch[1].shape[0] and "ce" in step_output.terms
        if not self.events or self.events[-1][0] != "batch":
            self.events.append(("batch", step_output.teacher_logits is not None))

    def on_epoch_end(self, trainer, record):
        record["recorder_epoch"] = record["epoch"]
        self.events.append(("epoch_end", record["epoch"]))

    def on_checkpoint(self, trainer, state):
        state["recorder"] = len(self.events)
        self.events.append(("checkpoint", state["epoch"]))

    def on_fit_end(self, trainer, summary):
        summary["recorder_events"] = len(self.events)
        self.events.append(("fit_end", summary["epochs"]))


def test_user_callback_sees_every_event_in_order_and_extends_the_record(tmp_path, tiny, tiny_teacher):
    import json

    from softlabels.config import validate_config
    from softlabels.engine.checkpoint import load_checkpoint

    rec = _Recorder()
    exp = validate_config(tiny(tmp_path, name="kd", method={"name": "kd"}, epochs=2,
                               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)}))
    summary = softlabels.train(exp, callbacks=[rec])
    assert summary["recorder_events"] == 9
    assert rec.events == [("fit_start", 0), ("epoch_start", 0), ("batch", True), ("epoch_end", 1), ("checkpoint", 1),
                          ("epoch_start", 1), ("batch", True), ("epoch_end", 2), ("checkpoint", 2), ("fit_end", 2)]
    rows = [json.loads(r) for r in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert [r["recorder_epoch"] for r in rows] == [1, 2]  # order 40 < 50: in the checkpoint and the metric files
    assert load_checkpoint(tmp_path / "kd" / "last.pt")["recorder"] == 8
    assert json.loads((tmp_path / "kd" / "summary.json").read_text())["recorder_events"] == 9
    assert "reg_fraction" in rows[0] and "teacher_cache_hits" not in rows[0]


class _Fail(Callback):
    def __init__(self):
        super().__init__()
        self.seen = None

    def on_epoch_end(self, trainer, record):
        raise RuntimeError("boom")

    def on_exception(self, trainer, exc):
        self.seen = exc


def test_on_exception_sees_the_error_and_it_is_raised(tmp_path, tiny):
    from softlabels.config import validate_config

    fail = _Fail()
    with pytest.raises(RuntimeError, match="boom"):
        softlabels.train(validate_config(tiny(tmp_path, epochs=1)), callbacks=[fail])
    assert isinstance(fail.seen, RuntimeError)


def test_callbacks_from_the_config_and_no_tracker_without_a_temperature(tmp_path, tiny, tiny_teacher):
    import json

    from softlabels.config import validate_config
    from softlabels.engine import Trainer

    cfg = tiny(tmp_path, name="fitnet", method={"name": "fitnet"}, epochs=1,
               teacher={"name": "resnet8", "checkpoint": str(tiny_teacher)})
    cfg["callbacks"] = [{"name": "test_every_n", "every": 2}]
    trainer = Trainer(validate_config(cfg))
    built = [c for c in trainer.callbacks if isinstance(c, _EveryN)]
    assert len(built) == 1 and built[0].params.every == 2
    assert trainer.tracker is None  # FitNet has no logit temperature: no regularization statistics
    orders = [c.order for c in trainer.callbacks]
    assert orders == sorted(orders)
    trainer.fit()
    row = json.loads((tmp_path / "fitnet" / "metrics.jsonl").read_text().splitlines()[0])
    assert not any(k.startswith("reg_") for k in row)
