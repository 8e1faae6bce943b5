"""``softlabels analyze``: the subcommands' arguments; the work is in one module per analysis
(``softlabels.analysis.width_sweep``, ``temperature_sweep``, ``filtering``, ``soft_label_bv``).

Imports nothing heavy itself (the experiments are imported when a subcommand runs).
Every subcommand trains into ``--out DIR`` with resume (finished runs are reused, unfinished ones
continued), writes its numbers as JSON, CSV and a Markdown table there, and prints the table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from softlabels.errors import UserError

_DESCRIPTION = """\
The WSL paper's science as commands. Each trains what it needs into --out DIR (re-running reuses
finished runs and resumes unfinished ones) and writes JSON + CSV + a Markdown table there;
`softlabels report DIR` then plots the runs and the bias/variance numbers.

  bias-variance      N models on N disjoint stratified splits: per-sample and mean bias/variance/risk
                     (cross-entropy, Heskes) and the MSE estimate (Yang et al.), optionally vs --widths
  temperature-sweep  KD at several T: regularization-sample fraction per epoch vs T, and vs top-1
  filtering          KD vs KD with regularization samples filtered out vs WSL, same seeds
  soft-label-bv      CE, KD and WSL students on the same splits: per-sample change of bias and variance
                     (KD − CE, WSL − CE) on regularization samples and on the others

Defaults: Fashion-MNIST, 10 % of the training set, resnet8 students, 15 epochs, the shipped resnet20
teacher; --config FILE takes data/student/optim/schedule (and teacher, method parameters) from a YAML file.
"""


class ArgumentValueError(UserError):
    """A command-line value that cannot be used (not a number, out of range)."""


def _numbers(values: list[str] | None, option: str, kind: type) -> list | None:
    if values is None:
        return None
    out = []
    for text in values:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise ArgumentValueError(f"{option}: {text!r} is not {what}") from None
        if kind is float and value.is_integer() and "." not in text and "e" not in text.lower():
            value = int(value)  # "2" stays 2 in run names and tables
        out.append(value)
    return out


def _subset(text: str | None):
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ArgumentValueError(f"--subset: {text!r} is neither a fraction in (0, 1] nor a number of images") from None


def _one(text: str | None, option: str, *, integer: bool = False):
    if text is None:
        return None
    return _numbers([text], option, int if integer else float)[0]


def _seeds(args) -> list[int]:
    from softlabels.analysis.checks import check_seeds

    return check_seeds(_numbers(args.seeds, "--seeds", int))


def _positive(text: str | None, option: str):
    value = _one(text, option)
    if value is not None:
        _values([value], option, positive=True)
    return value


def _check_splits(opts: dict) -> None:
    if opts["splits"] < 2:
        raise ArgumentValueError(f"--splits must be >= 2 (disjoint training sets for the variance), got {opts['splits']}")
    if opts["partitions"] < 1:
        raise ArgumentValueError(f"--partitions must be >= 1, got {opts['partitions']}")


def _values(values, option: str, *, positive: bool = False) -> list:
    from softlabels.analysis.checks import check_values

    return check_values(values, option, positive=positive)


def _common(args):
    from softlabels.analysis.base import base_config

    epochs = _one(args.epochs, "--epochs", integer=True)
    base = base_config(args.config, args.set or [], dataset=args.dataset, model=args.model,
                       epochs=epochs, subset=_subset(args.subset), device=args.device)
    out = Path(args.out or f"runs/analysis/{args.command_name}")
    out.mkdir(parents=True, exist_ok=True)
    return base, out


def _teacher(args, base, out: Path):
    from softlabels.analysis.teachers import resolve_teacher

    return resolve_teacher(base, out, checkpoint=args.teacher_checkpoint, name=args.teacher, train=args.train_teacher,
                           epochs=_one(args.teacher_epochs, "--teacher-epochs", integer=True))


def _finish(table: str, out: Path, stem: str) -> int:
    print(table)
    print(f"results: {out}/{stem}.json, {out}/{stem}.csv (runs in {out})", file=sys.stderr)
    return 0


def _cmd_bias_variance(args) -> int:
    from softlabels.analysis.width_sweep import bias_variance_experiment, markdown

    if args.widths and args.model:
        raise ArgumentValueError("give either --model or --widths, not both")
    opts = {"splits": _one(args.splits, "--splits", integer=True),
            "partitions": _one(args.partitions, "--partitions", integer=True),
            "seeds": _seeds(args), "widths": _numbers(args.widths, "--widths", int),
            "temperature": _positive(args.temperature, "--temperature")}
    _check_splits(opts)
    base, out = _common(args)
    teacher = _teacher(args, base, out) if args.method != "ce" else None
    result = bias_variance_experiment(base, out, family=args.family, method=args.method, teacher=teacher,
                                      **opts)
    return _finish(markdown(result), out, "bias_variance")


def _cmd_temperature_sweep(args) -> int:
    from softlabels.analysis.temperature_sweep import markdown, temperature_sweep

    temperatures = _numbers(args.temperatures, "--temperatures", float)
    _values(temperatures, "--temperatures", positive=True)
    seeds = _seeds(args)
    base, out = _common(args)
    result = temperature_sweep(base, out, teacher=_teacher(args, base, out), temperatures=temperatures, seeds=seeds)
    return _finish(markdown(result), out, "temperature_sweep")


def _cmd_filtering(args) -> int:
    from softlabels.analysis.filtering import filtering_experiment, markdown

    opts = {"seeds": _seeds(args), "temperature": _positive(args.temperature, "--temperature"),
            "alpha": _one(args.alpha, "--alpha")}
    if opts["alpha"] is not None:
        _values([opts["alpha"]], "--alpha")
    base, out = _common(args)
    result = filtering_experiment(base, out, teacher=_teacher(args, base, out), **opts)
    return _finish(markdown(result), out, "filtering")


def _cmd_soft_label_bv(args) -> int:
    from softlabels.analysis.soft_label_bv import markdown, soft_label_bias_variance

    opts = {"splits": _one(args.splits, "--splits", integer=True),
            "partitions": _one(args.partitions, "--partitions", integer=True), "seeds": _seeds(args),
            "temperature": _positive(args.temperature, "--temperature"), "alpha": _one(args.alpha, "--alpha")}
    _check_splits(opts)
    if opts["alpha"] is not None:
        _values([opts["alpha"]], "--alpha")
    base, out = _common(args)
    result = soft_label_bias_variance(base, out, teacher=_teacher(args, base, out), **opts)
    return _finish(markdown(result), out, "soft_label_bv")


def _add_common(p: argparse.ArgumentParser, name: str, seeds: list[str]) -> None:
    g = p.add_argument_group("experiment")
    g.add_argument("--config", metavar="FILE", help="base experiment YAML (data, student, optim, schedule, runtime; "
                   "its teacher and method parameters are defaults); default: built-in Fashion-MNIST setting")
    g.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="dotted override of the base config, e.g. --set optim.lr=0.1 (repeatable)")
    g.add_argument("--out", metavar="DIR", help=f"output folder for runs and results (default runs/analysis/{name})")
    g.add_argument("--dataset", help="data.name (fashion_mnist, cifar10, cifar100, synthetic, ...)")
    g.add_argument("--model", help="student model (default: the base config's; built-in resnet8)")
    g.add_argument("--epochs", metavar="N", help="schedule.epochs of every run")
    g.add_argument("--subset", metavar="F|N", help="data.train_subset: a fraction in (0, 1] or a number of images")
    g.add_argument("--seeds", nargs="+", metavar="S", default=seeds, help=f"training seeds (default {' '.join(seeds)})")
    g.add_argument("--device", help="runtime.device (auto, cpu, cuda, ...)")
    p.set_defaults(command_name=name)


def _add_teacher(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("teacher" + ("" if required else " (only with --method kd or wsl)"))
    g.add_argument("--teacher-checkpoint", metavar="PATH",
                   help="teacher .pt file or run folder (default: the base config's teacher; for Fashion-MNIST "
                   "the shipped resnet20)")
    g.add_argument("--teacher", metavar="NAME", help="teacher model name (default: read from the checkpoint)")
    g.add_argument("--train-teacher", action="store_true",
                   help="train the teacher (--teacher, default resnet20) on the base data first, into --out")
    g.add_argument("--teacher-epochs", metavar="N", help="epochs of --train-teacher (default: the base's)")


def _add_splits(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("splits")
    g.add_argument("--splits", metavar="N", default="2", help="disjoint stratified splits of the training set (default 2)")
    g.add_argument("--partitions", metavar="K", default="1",
                   help="independent random N-way partitions (repeated random splits; default 1)")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``analyze`` and its subcommands on the CLI's subparsers."""
    p = sub.add_parser("analyze", help="the paper's experiments: bias/variance, temperature sweep, filtering",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    q = asub.add_parser("bias-variance", help="bias/variance/risk from models trained on disjoint splits",
                        description="Train N models on N disjoint stratified splits of the training set (x partitions "
                        "x seeds) and decompose their test-set cross-entropy (Heskes) and squared error (Yang et al.).")
    _add_common(q, "bias-variance", ["0"])
    _add_splits(q)
    g = q.add_argument_group("models")
    g.add_argument("--widths", nargs="+", metavar="K", help="sweep the width family instead: FAMILY_wK models")
    g.add_argument("--family", default="resnet18", help="width family for --widths (default resnet18: resnet18_wK)")
    g.add_argument("--method", choices=["ce", "kd", "wsl"], default="ce", help="training method (default ce)")
    g.add_argument("--temperature", metavar="T", help="temperature for --method kd/wsl")
    _add_teacher(q, required=False)
    q.set_defaults(func=_cmd_bias_variance)

    q = asub.add_parser("temperature-sweep", help="KD at several temperatures: regularization samples vs T and top-1",
                        description="Distil with KD at each temperature; record the regularization-sample fraction per "
                        "epoch and best/last top-1; test whether the fraction rises with T and accuracy falls with it.")
    _add_common(q, "temperature-sweep", ["0"])
    q.add_argument("--temperatures", nargs="+", metavar="T", default=["1", "2", "4", "8"],
                   help="temperatures (default 1 2 4 8)")
    _add_teacher(q)
    q.set_defaults(func=_cmd_temperature_sweep)

    q = asub.add_parser("filtering", help="KD vs KD without regularization samples vs WSL",
                        description="Three arms of the wsl method with the same T, alpha and CE weight: weighting none "
                        "(KD), filter (soft loss dropped on regularization samples) and wsl; best/last top-1 per seed "
                        "and mean ± std.")
    _add_common(q, "filtering", ["0", "1", "2"])
    q.add_argument("--temperature", metavar="T", help="temperature (default: the base's, else 4)")
    q.add_argument("--alpha", metavar="A", help="soft-loss weight alpha (default: the base's, else 2.25)")
    _add_teacher(q)
    q.set_defaults(func=_cmd_filtering)

    q = asub.add_parser("soft-label-bv", help="per-sample bias/variance of CE, KD and WSL vs regularization samples",
                        description="Train CE, KD and WSL students on the same disjoint splits; per test sample, relate "
                        "the change of bias and variance against CE to whether it is a regularization sample "
                        "(softened CE students' p(y) above the teacher's).")
    _add_common(q, "soft-label-bv", ["0"])
    _add_splits(q)
    q.add_argument("--temperature", metavar="T", help="KD/WSL temperature and the regularization test's (default 4)")
    q.add_argument("--alpha", metavar="A", help="WSL alpha (default: the base's, else 2.25)")
    _add_teacher(q)
    q.set_defaults(func=_cmd_soft_label_bv)
    return p
