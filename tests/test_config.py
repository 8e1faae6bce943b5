"""Config loading, validation messages and dotted overrides."""
import os
from pathlib import Path

import pytest
import yaml

from softlabels.config import apply_overrides, load_config, parse_override, validate_config
from softlabels.errors import ConfigError, UserError


def write(tmp_path, cfg, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_valid_config_round_trip(tmp_path, tiny):
    exp = load_config(write(tmp_path, tiny(tmp_path)))
    assert exp.student.name == "resnet8" and exp.schedule.epochs == 2


def test_unknown_key_names_file_and_key(tmp_path, tiny):
    cfg = tiny(tmp_path)
    cfg["optim"]["lrr"] = 0.1
    path = write(tmp_path, cfg)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "optim.lrr" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    "key,value,needle",
    [
        (("optim", "lr"), -0.1, "optim.lr"),
        (("optim", "lr"), "fast", "optim.lr"),
        (("schedule", "epochs"), 0, "schedule.epochs"),
        (("data", "train_subset"), 1.5, "data.train_subset"),
        (("data", "batch_size"), 0, "data.batch_size"),
    ],
)
def test_impossible_values(tmp_path, tiny, key, value, needle):
    cfg = tiny(tmp_path)
    cfg[key[0]][key[1]] = value
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(write(tmp_path, cfg))


def test_method_params_validated_with_method_prefix(tmp_path, tiny):
    cfg = tiny(tmp_path, method={"name": "kd", "temperature": 0}, teacher={"name": "resnet8", "checkpoint": "x.pt"})
    with pytest.raises(ConfigError, match=r"method\.temperature"):
        validate_config(cfg, "exp.yaml", check_files=False)
    cfg["method"] = {"name": "kd", "temprature": 4}
    with pytest.raises(ConfigError, match=r"unknown key 'method\.temprature'"):
        validate_config(cfg, "exp.yaml", check_files=False)


def test_unknown_method_and_model(tmp_path, tiny):
    with pytest.raises(ConfigError, match="method 'nope'.*known: .*wsl"):
        validate_config(tiny(tmp_path, method={"name": "nope"}))
    cfg = tiny(tmp_path)
    cfg["student"]["name"] = "resnet9000"
    with pytest.raises(ConfigError, match="student.name"):
        validate_config(cfg)


def test_distillation_needs_teacher(tmp_path, tiny):
    with pytest.raises(ConfigError, match="teacher"):
        validate_config(tiny(tmp_path, method={"name": "wsl"}), "exp.yaml")


def test_missing_teacher_checkpoint_file(tmp_path, tiny):
    cfg = tiny(tmp_path, method={"name": "wsl"}, teacher={"name": "resnet8", "checkpoint": str(tmp_path / "no.pt")})
    with pytest.raises(ConfigError, match=r"teacher\.checkpoint.*no\.pt"):
        validate_config(cfg, "exp.yaml")


def test_class_count_mismatch(tmp_path, tiny):
    cfg = tiny(tmp_path, method={"name": "kd"}, teacher={"name": "resnet8", "checkpoint": "t.pt", "num_classes": 10})
    cfg["student"]["num_classes"] = 100
    with pytest.raises(ConfigError, match="num_classes"):
        validate_config(cfg, check_files=False)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\nstudent: {")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*line"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_yaml_tags_are_not_executed(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_overrides(tmp_path, tiny):
    path = write(tmp_path, tiny(tmp_path))
    exp = load_config(path, ["optim.lr=0.2", "schedule.milestones=[1, 2]", "runtime.device=cpu", "data.augment=false"])
    assert exp.optim.lr == 0.2 and exp.schedule.milestones == [1, 2] and exp.data.augment is False
    assert parse_override("a.b.c=3") == (["a", "b", "c"], 3)
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    with pytest.raises(ConfigError, match="key.subkey=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(path, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_shipped_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(f for f in root.rglob("*.yaml") if f.parent.name != "reproduce")  # plans: test_reproduce.py
    assert len(files) >= 10
    for f in files:
        validate_config(yaml.safe_load(f.read_text()), str(f), check_files=False)


def test_fashion_mnist_configs_match_the_demo():
    """configs/fashion_mnist/ is the demo, written out: they must not drift apart."""
    from pathlib import Path

    from softlabels import demo

    root = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist"
    from softlabels.config import method_params

    sections = ("data", "student", "optim", "schedule", "seed")

    def pick(cfg):
        exp = validate_config(cfg, check_files=False)
        dump = exp.model_dump()
        return {"method": (exp.method.name, method_params(exp).model_dump()), **{k: dump[k] for k in sections}}

    assert pick(yaml.safe_load((root / "teacher.yaml").read_text())) == pick(demo.teacher_config(Path("x")))
    for label, file in (("student alone", "student.yaml"), ("KD", "kd.yaml"), ("WSL", "wsl.yaml")):
        cfg = demo._merge(demo.BASE, demo.STUDENTS[label])
        cfg["student"] = {"name": demo.STUDENT_MODEL}
        if cfg["method"]["name"] != "ce":
            cfg["teacher"] = {"name": "resnet20", "checkpoint": "t.pt"}
        assert pick(yaml.safe_load((root / file).read_text())) == pick(cfg), file


def test_callbacks_loggers_imports_and_aug_seed(tmp_path, tiny):
    cfg = tiny(tmp_path, callbacks=["some_callback", {"name": "other", "every": 2}], imports=["my_pkg.models"])
    cfg["data"]["aug_seed"] = 7
    from softlabels.config import Experiment

    exp = Experiment.model_validate(cfg)
    assert exp.callbacks[1] == {"name": "other", "every": 2} and exp.imports == ["my_pkg.models"]
    assert exp.data.aug_seed == 7 and exp.model_dump()["data"]["aug_seed"] == 7
    for key, value in (("callbacks", [{"every": 2}]), ("loggers", [""]), ("imports", ["not a module"])):
        with pytest.raises(UserError, match=key):
            validate_config(tiny(tmp_path, **{key: value}), check_files=False)


def test_new_keys_at_their_defaults_are_not_written():
    """config.yaml of runs written before callbacks/loggers/imports/aug_seed existed reads back identically."""
    from softlabels.config import Experiment

    dump = Experiment.model_validate({"student": {"name": "resnet8"}}).model_dump()
    assert not {"callbacks", "loggers", "imports"} & set(dump) and "aug_seed" not in dump["data"]


def test_unknown_callback_or_logger_named(tmp_path, tiny):
    with pytest.raises(ConfigError, match=r"exp\.yaml.*callbacks\[0\].*no_such_callback"):
        validate_config(tiny(tmp_path, callbacks=["no_such_callback"]), "exp.yaml", check_files=False)
    with pytest.raises(ConfigError, match=r"loggers\[0\]"):
        validate_config(tiny(tmp_path, loggers=[{"name": "no_such_logger"}]), "exp.yaml", check_files=False)


def test_sections_are_typed_once(tmp_path, tiny):
    from softlabels.data.fashion_mnist import FashionMNISTConfig
    from softlabels.data.synthetic import SyntheticDataConfig
    from softlabels.methods.kd import KDParams

    exp = validate_config(tiny(tmp_path, method={"name": "kd", "temperature": 2},
                               teacher={"name": "resnet8", "checkpoint": "t.pt"}), check_files=False)
    assert isinstance(exp.data, SyntheticDataConfig) and exp.data.synthetic.num_classes == 4
    assert isinstance(exp.method.params, KDParams) and exp.method.params.temperature == 2.0
    from softlabels.config import method_params

    assert method_params(exp) is exp.method.params  # the validated object, not a re-validation
    assert exp.model_dump()["method"] == {"name": "kd", "temperature": 2}  # what the config wrote
    default = validate_config({"student": {"name": "resnet8"}}, check_files=False)
    assert isinstance(default.data, FashionMNISTConfig) and "synthetic" not in default.model_dump()["data"]
    with pytest.raises(ConfigError, match=r"unknown key 'data\.synthetic\.colour'"):
        validate_config(tiny(tmp_path, data={"name": "synthetic", "synthetic": {"colour": 1}}), check_files=False)
    from softlabels.config import MethodConfig

    assert MethodConfig.of("wsl", alpha=1).params.alpha == 1.0
    combined = MethodConfig.model_validate({"name": "fitnet+wsl", "wsl": {"temperature": 4}, "fitnet": {"weight": 100}})
    assert combined.params.fitnet.weight == 100.0
    assert combined.model_dump() == {"name": "fitnet+wsl", "wsl": {"temperature": 4}, "fitnet": {"weight": 100}}


def test_committed_run_configs_dump_back_unchanged():
    """config.yaml of the committed run folders reads back to the same YAML (resume compares the dumps)."""
    from pathlib import Path

    from softlabels.config import to_yaml

    files = sorted((Path(__file__).resolve().parents[1] / "results").rglob("config.yaml"))
    assert len(files) >= 10
    for f in files:
        text = f.read_text()
        raw = yaml.safe_load(text)
        out = to_yaml(validate_config(raw, str(f), check_files=False))
        assert _contains(yaml.safe_load(out), raw), f  # older files lack keys added since, nothing else
        if "compile_backend" in text:  # written by the current format (older files lack newer runtime keys)
            assert out == text, f


def _contains(full, part) -> bool:
    if isinstance(full, dict) and isinstance(part, dict):
        return all(k in full and _contains(full[k], v) for k, v in part.items())
    return full == part and type(full) is type(part)


def test_docs_configs_md_is_generated_from_the_models():
    from pathlib import Path

    from softlabels.config.docs import main, render

    path = Path(__file__).resolve().parents[1] / "docs" / "configs.md"
    assert path.read_text(encoding="utf-8") == render(), (
        "docs/configs.md is stale: run python -m softlabels.config.docs --write docs/configs.md"
    )
    text = render()
    assert "| `data.aug_seed` | `null` |" in text and "| `data.synthetic.num_classes` | `10` |" in text
    assert "`alpha` (2.25): multiplies the weighted soft term" in text  # a method's Params description
    assert main(["--check", str(path)]) == 0


def test_docs_check_reports_a_stale_file(tmp_path, capsys):
    from softlabels.config.docs import main

    stale = tmp_path / "configs.md"
    stale.write_text("# old\n")
    assert main(["--check", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err


# ----------------------------------------------------------------------------- hostile inputs, through the CLI
def cli(args, capsys) -> tuple[int, str]:
    """Run ``softlabels ARGS``; (exit status, stderr). A one-line message is asserted by the callers."""
    from softlabels.cli import main

    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err.strip()


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert err.startswith("softlabels: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize("name", ["../../escape", "/some/absolute/path", "a/../../b", "", ".", "./"])
def test_run_name_must_stay_inside_output_dir(tmp_path, tiny, capsys, name):
    path = write(tmp_path, tiny(tmp_path))
    rc, err = cli(["validate", path, f"name={name}"], capsys)
    assert_one_line_error(rc, err, "key 'name'")
    assert validate_config(tiny(tmp_path, name="sub/dir/run"), check_files=False).run_dir == tmp_path / "sub/dir/run"


def test_binary_and_non_utf8_config(tmp_path, capsys):
    path = tmp_path / "binary.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    rc, err = cli(["validate", path], capsys)
    assert_one_line_error(rc, err, str(path), "not UTF-8")
    path.write_bytes(b"name: a\x00b\n")  # valid UTF-8, but a control character YAML refuses
    rc, err = cli(["validate", path], capsys)
    assert_one_line_error(rc, err, str(path), "#x0000")


def test_integers_beyond_int64(tmp_path, tiny, capsys):
    path = write(tmp_path, tiny(tmp_path))
    rc, err = cli(["validate", path, "seed=12345678901234567890123456789"], capsys)
    assert_one_line_error(rc, err, "key 'seed'", "64-bit")
    rc, err = cli(["validate", path, "data.batch_size=99999999999999999999"], capsys)
    assert_one_line_error(rc, err, "key 'data.batch_size'")


@pytest.mark.parametrize(
    "override,key",
    [
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=1e400", "optim.lr"),  # YAML reads 1e400 as a string; pydantic makes it inf
        ("schedule.min_lr=.nan", "schedule.min_lr"),
        ("method.temperature=-.inf", "method.temperature"),
        ("method.temperature=1e400", "method.temperature"),  # a method's own Params
        ("student.infodrop.temperature=.inf", "student.infodrop.temperature"),
        ("callbacks=[{name: x, every: .inf}]", "callbacks[0].every"),
    ],
)
def test_non_finite_numbers_refused_everywhere(tmp_path, tiny, capsys, override, key):
    cfg = tiny(tmp_path, method={"name": "kd"}, teacher={"name": "resnet8", "checkpoint": "t.pt"})
    rc, err = cli(["validate", write(tmp_path, cfg), override, "--no-files"], capsys)
    assert_one_line_error(rc, err, f"key '{key}'")


def test_override_with_control_characters(tmp_path, tiny, capsys):
    path = write(tmp_path, tiny(tmp_path))
    for override in ("name=ab\x01c", "optim.lr=0.1\x07", "optim\x01.lr=0.1"):
        rc, err = cli(["validate", path, override], capsys)
        assert_one_line_error(rc, err, "override")


def test_validate_refuses_an_unknown_dataset_and_wrong_class_counts(tmp_path, tiny, capsys):
    path = write(tmp_path, tiny(tmp_path))
    rc, err = cli(["validate", path, "data.name=mnist"], capsys)
    assert_one_line_error(rc, err, "key 'data.name'", "unknown dataset 'mnist'", "synthetic")
    rc, err = cli(["validate", path, "student.num_classes=10"], capsys)  # the tiny set has 4 classes
    assert_one_line_error(rc, err, "key 'student.num_classes'", "has 4 classes")
    cfg = tiny(tmp_path, method={"name": "kd"}, teacher={"name": "resnet8", "checkpoint": "t.pt", "num_classes": 7})
    rc, err = cli(["validate", write(tmp_path, cfg), "--no-files"], capsys)
    assert_one_line_error(rc, err, "key 'teacher.num_classes'")
    fm = {"student": {"name": "resnet8", "num_classes": 100}, "data": {"name": "fashion_mnist"}}
    with pytest.raises(ConfigError, match="'fashion_mnist' has 10 classes"):
        validate_config(fm, check_files=False)
    with pytest.raises(ConfigError, match="'cifar100' has 100 classes"):
        validate_config({**fm, "student": {"name": "resnet8", "num_classes": 10}, "data": {"name": "cifar100"}},
                        check_files=False)


def _fake_checkpoint(path, num_classes: int, in_channels: int):
    import torch

    torch.save({"model": {"w": torch.zeros(1)}, "model_name": "resnet8", "num_classes": num_classes,
                "in_channels": in_channels}, path)
    return path


def test_validate_compares_teacher_and_init_checkpoints_with_the_data(tmp_path, tiny, capsys):
    one_channel = _fake_checkpoint(tmp_path / "gray.pt", 4, 1)
    cfg = tiny(tmp_path, method={"name": "kd"}, teacher={"name": "resnet8", "checkpoint": str(one_channel)})
    rc, err = cli(["validate", write(tmp_path, cfg)], capsys)  # the tiny set is 3-channel
    assert_one_line_error(rc, err, "key 'teacher.checkpoint'", "1 input channels", "has 3")
    ten = _fake_checkpoint(tmp_path / "ten.pt", 10, 3)
    cfg["teacher"]["checkpoint"] = str(ten)
    rc, err = cli(["validate", write(tmp_path, cfg)], capsys)
    assert_one_line_error(rc, err, "key 'teacher.checkpoint'", "10 classes", "has 4")
    good = _fake_checkpoint(tmp_path / "good.pt", 4, 3)
    cfg["teacher"]["checkpoint"] = str(good)
    cfg["student"]["init"] = str(ten)
    rc, err = cli(["validate", write(tmp_path, cfg)], capsys)
    assert_one_line_error(rc, err, "key 'student.init'", "10 classes")
    del cfg["student"]["init"]
    rc, _ = cli(["validate", write(tmp_path, cfg)], capsys)
    assert rc == 0
    (tmp_path / "damaged.pt").write_bytes(b"not a checkpoint")
    cfg["teacher"]["checkpoint"] = str(tmp_path / "damaged.pt")
    rc, err = cli(["validate", write(tmp_path, cfg)], capsys)
    assert_one_line_error(rc, err, "key 'teacher.checkpoint'", "damaged.pt")


def test_output_dir_that_is_a_file_or_not_writable(tmp_path, tiny, capsys, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    path = write(tmp_path, tiny(tmp_path))
    rc, err = cli(["validate", path, f"output_dir={blocker}"], capsys)
    assert_one_line_error(rc, err, "key 'output_dir'", str(blocker), "is a file")
    rc, err = cli(["validate", path, f"output_dir={blocker}/below"], capsys)
    assert_one_line_error(rc, err, "key 'output_dir'", str(blocker))
    rc, _ = cli(["validate", path, f"output_dir={blocker}", "--no-files"], capsys)
    assert rc == 0  # a check of the file system: skipped with --no-files

    import os

    import softlabels.config.loading as loading

    real_access = os.access
    monkeypatch.setattr(loading.os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    rc, err = cli(["validate", path, f"output_dir={tmp_path / 'new'}"], capsys)
    assert_one_line_error(rc, err, "key 'output_dir'", "not writable", str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root may write anywhere")
def test_read_only_output_dir(tmp_path, tiny, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, err = cli(["validate", write(tmp_path, tiny(tmp_path)), f"output_dir={ro}"], capsys)
        assert_one_line_error(rc, err, "key 'output_dir'", "not writable")
    finally:
        ro.chmod(0o755)


def test_data_root_without_the_data(tmp_path, capsys):
    cfg = {"student": {"name": "resnet8"}, "output_dir": str(tmp_path / "runs"),
           "data": {"name": "fashion_mnist", "root": str(tmp_path / "empty")}}
    rc, err = cli(["validate", write(tmp_path, cfg)], capsys)
    assert_one_line_error(rc, err, "key 'data.root'", f"data.root {tmp_path / 'empty'} does not hold Fashion-MNIST")
    for name in ("cifar10", "imagenet"):
        cfg["data"]["name"] = name
        rc, err = cli(["validate", write(tmp_path, cfg)], capsys)
        assert_one_line_error(rc, err, "key 'data.root'", str(tmp_path / "empty"))


def test_damaged_run_config_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(b"name: [unclosed\n\x00\xff")
    rc, err = cli(["train", "--resume", run], capsys)
    assert_one_line_error(rc, err, str(run / "config.yaml"))
    (run / "config.yaml").write_text("name: [unclosed\nseed: 1\n")
    rc, err = cli(["train", "--resume", run], capsys)
    assert_one_line_error(rc, err, str(run / "config.yaml"), "not valid YAML")


@pytest.mark.parametrize(
    "override,needle",
    [
        ("teacher.train_mode=true", "teacher.cache cannot be used with teacher.train_mode"),
        ("optim.momentum=0", "optim.nesterov needs optim.momentum > 0"),
        ("schedule.milestones=[5]", "schedule.milestones must lie in 1..epochs"),
        ("schedule.milestones=[2, 1]", "must be increasing"),
        ("schedule.warmup_epochs=2", "warmup_epochs must be smaller"),
        ("data.val_split=1.0", "key 'data.val_split'"),
        ("data.train_subset=true", "key 'data.train_subset'"),
        ("runtime.device=gpu0", "key 'runtime.device': not a device"),
        ("student.init=missing.pt", "key 'student.init': file not found: missing.pt"),
        ("method.name=nope", "key 'method.name': unknown method 'nope'"),
        ("student.name=resnet9000", "key 'student.name': unknown model"),
        ("method.name=wsl", "method 'wsl' distils from a teacher"),
    ],
)
def test_every_validate_check_is_a_one_line_error(tmp_path, tiny, capsys, override, needle):
    cfg = tiny(tmp_path)
    cfg["optim"].update(nesterov=True)
    cfg["schedule"]["epochs"] = 2
    if not override.startswith("method.name=wsl"):
        cfg["method"] = {"name": "kd"}
        cfg["teacher"] = {"name": "resnet8", "checkpoint": str(_fake_checkpoint(tmp_path / "t.pt", 4, 3)),
                          "cache": override.startswith("teacher.train_mode")}
    rc, err = cli(["validate", write(tmp_path, cfg), override], capsys)
    assert_one_line_error(rc, err, needle)


def test_logger_library_missing_is_an_environment_check(tmp_path, tiny, monkeypatch):
    """A run folder that used tensorboard still validates without it (for reading); train-time validation refuses."""
    import softlabels.callbacks.tensorboard as tb
    from softlabels.errors import UserError as _UserError

    def missing(*args, **kwargs):
        raise _UserError("logger 'tensorboard' needs the tensorboard package: pip install softlabels[tensorboard]")

    monkeypatch.setattr(tb, "require", missing)
    cfg = tiny(tmp_path, loggers=["tensorboard"])
    assert validate_config(cfg, "exp.yaml", check_files=False).loggers == ["tensorboard"]
    with pytest.raises(ConfigError, match=r"exp\.yaml.*pip install softlabels\[tensorboard\]"):
        validate_config(cfg, "exp.yaml")


def test_checkpoint_classes_against_student_when_the_dataset_count_is_unknown(tmp_path):
    """ImageNet's class count comes from its folders; before they exist student.num_classes is compared."""
    ten = _fake_checkpoint(tmp_path / "ten.pt", 10, 3)
    cfg = {"student": {"name": "resnet8", "num_classes": 5}, "method": {"name": "kd"},
           "teacher": {"name": "resnet8", "checkpoint": str(ten)}, "output_dir": str(tmp_path),
           "data": {"name": "imagenet", "root": str(tmp_path / "no_imagenet")}}
    with pytest.raises(ConfigError, match=r"key 'teacher\.checkpoint'.*10 classes but student\.num_classes is 5"):
        validate_config(cfg)


def test_unavailable_device_is_refused_when_checking_this_machine(tmp_path, tiny, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = write(tmp_path, tiny(tmp_path))
    rc, err = cli(["validate", path, "runtime.device=cuda"], capsys)
    assert_one_line_error(rc, err, "runtime.device", "no CUDA device")
    rc, _ = cli(["validate", path, "runtime.device=cuda", "--no-files"], capsys)
    assert rc == 0  # the config itself is fine: another machine may have the GPU


def test_yaml_alias_bombs_and_recursive_aliases_are_refused_quickly(tmp_path, capsys):
    import time

    lines = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 values
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    rc, err = cli(["validate", bomb], capsys)
    assert_one_line_error(rc, err, str(bomb), "YAML aliases")
    assert time.perf_counter() - start < 5
    loop = tmp_path / "loop.yaml"
    loop.write_text("student: &s {name: resnet8, x: *s}\n")
    rc, err = cli(["validate", loop], capsys)
    assert_one_line_error(rc, err, str(loop))
    ok = write(tmp_path, {"student": {"name": "resnet8"}}, "ok.yaml")
    rc, err = cli(["validate", ok, "seed=&a [*a]", "--no-files"], capsys)
    assert_one_line_error(rc, err, "override")
