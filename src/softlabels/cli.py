"""The ``softlabels`` command line: parses arguments and calls the library; nothing else.

Errors a user can cause print one line (``softlabels: error: ...``) and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from softlabels.errors import NonFiniteLossError, UserError


def _cmd_train(args) -> int:
    from softlabels.config import load_config
    from softlabels.engine import experiment_from_run, train

    if args.config is not None and "=" in args.config and not Path(args.config).exists():
        args.overrides, args.config = [args.config, *args.overrides], None  # `--resume DIR key=value`
    if args.config is None and args.resume is None:
        raise UserError("train needs a CONFIG file, or --resume RUN_DIR")
    if args.config is not None and Path(args.config).is_dir() and args.resume is None:
        raise UserError(f"{args.config} is a folder; to continue a run use: softlabels train --resume {args.config}")
    if args.config is not None:
        from softlabels.plugins import with_recorded_imports

        exp = load_config(args.config, args.overrides)
        if args.resume is None:  # record the modules this run needs in its config.yaml (eval/--resume reuse them)
            exp = with_recorded_imports(exp, getattr(args, "imports", []))
    else:
        exp = experiment_from_run(args.resume)
        if args.overrides:
            from softlabels.config import apply_overrides, validate_config

            exp = validate_config(apply_overrides(exp.model_dump(mode="json"), args.overrides), f"{args.resume}/config.yaml")
    from softlabels.callbacks.console import interrupt_notice, set_quiet

    set_quiet(args.quiet)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun: one summary, one notice
    try:
        summary = train(exp, resume_dir=args.resume)
    except KeyboardInterrupt as exc:
        if main_process and not getattr(exc, "softlabels_notice_shown", False):  # stopped before the run began
            print(f"softlabels: {interrupt_notice(args.resume or exp.run_dir)}", file=sys.stderr)
        return 130
    if main_process:  # the human summary is on stderr (and in train.log); the result line on stdout
        print(json.dumps({k: summary[k] for k in ("name", "best_top1", "last_top1", "best_epoch", "wall_time_s")}))
    return 0


def _cmd_validate(args) -> int:
    from softlabels.config import load_config, method_params

    exp = load_config(args.config, args.overrides, check_files=not args.no_files)
    print(f"{args.config}: OK (method {exp.method.name}: {method_params(exp).model_dump()})")
    return 0


def _cmd_eval(args) -> int:
    from softlabels.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, split=args.split, data_root=args.data_root, device=args.device,
                                 corruptions=args.corruptions)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _cmd_demo(args) -> int:
    from softlabels.demo import run_demo

    run_demo(out_dir=args.out, quick=args.quick, retrain_teacher=args.retrain_teacher)
    return 0


def _cmd_bench(args) -> int:
    from softlabels.bench import main_bench

    main_bench(args)
    return 0


def _cmd_list(args) -> int:
    from softlabels.data import list_datasets
    from softlabels.methods import list_methods
    from softlabels.models import list_models
    from softlabels.resources import list_configs

    what = {"models": list_models, "methods": list_methods, "datasets": list_datasets, "configs": list_configs}
    for kind in [args.kind] if args.kind else list(what):
        print(f"{kind}: " + ", ".join(what[kind]()))
        if kind == "models":
            from softlabels.models.pretrained import model_notes

            print(model_notes())
    return 0


def _cmd_export(args) -> int:
    from softlabels.export import export_run

    result = export_run(args.run, args.format, checkpoint=args.checkpoint, out=args.out,
                        input_size=tuple(args.input_size) if args.input_size else None)
    print(result.line())
    print(f"manifest: {result.manifest}", file=sys.stderr)
    return 0


def add_pair_arguments(p: argparse.ArgumentParser) -> None:
    """The teacher/student pair, input shape, batch, classes and steps of a speed benchmark."""
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--steps", type=int, default=8, help="batches per timed epoch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softlabels", description="Knowledge distillation with weighted soft labels.")
    from softlabels import __version__

    parser.add_argument("--version", action="version", version=f"softlabels {__version__}")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module that registers models/datasets/methods/callbacks (repeatable; "
                        "accepted after any subcommand too)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a teacher or distil a student from a YAML config")
    p.add_argument("config", nargs="?", help="experiment YAML file, or a shipped config name (fashion_mnist/wsl)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.1 method.temperature=2")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="console: warnings, errors and the result line only (train.log keeps everything)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("validate", help="check a config without training")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--no-files", action="store_true",
                   help="check the config only, not this machine (checkpoints, data.root, output_dir, device, "
                        "logger libraries)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("eval", help="top-1/top-5 of a checkpoint or run folder on its dataset")
    p.add_argument("checkpoint", help="a .pt file or a run folder (best.pt is used)")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--data-root", help="dataset folder, if it moved since training")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="one-line JSON output")
    p.add_argument("--corruptions", nargs="*", default=None, metavar="NAME",
                   help="also top-1 under common corruptions, severities 1-5 (no names: the six defaults)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="Fashion-MNIST: teacher, student alone, KD and WSL, with a table")
    p.add_argument("--out", default="runs/demo", help="folder for the demo's runs")
    p.add_argument("--quick", action="store_true",
                   help="a short smoke run with the shipped teacher (2 epochs, 2%% of the data; does not rank methods)")
    p.add_argument("--retrain-teacher", action="store_true", help="train the teacher instead of using the shipped one")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="images/s of the distillation step vs a bare PyTorch step, cache, data")
    add_pair_arguments(p)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (min/median/max kept)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--quick", action="store_true", help="2 steps x 2 rounds: about a minute on 2 CPU cores")
    p.add_argument("--max-spread", type=float, default=0.10,
                   help="warn when a ratio's per-round values spread wider than this fraction of its median")
    p.add_argument("--runtime-paths", nargs="*", metavar="PATH", default=None,
                   help="instead: time eager float32 against compile / bf16 / compile_bf16 (all when none named)")
    p.add_argument("--json", metavar="PATH", help="write the measurements as JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("list", help="registered models, methods and datasets")
    p.add_argument("kind", nargs="?", choices=["models", "methods", "datasets", "configs"])
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("export", help="write a run's student as TorchScript, ONNX or safetensors and check it")
    p.add_argument("run", help="a run folder (or a checkpoint file)")
    p.add_argument("--format", required=True, choices=["torchscript", "onnx", "safetensors"])
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint of the run")
    p.add_argument("--out", help="output file (default RUN/export/student_<checkpoint>.<ext>)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="check on random inputs of this size instead of the run's test images")
    p.set_defaults(func=_cmd_export)
    from softlabels.report.commands import add_parser as _add_report

    _add_report(sub)
    from softlabels.analysis.commands import add_parser as _add_analyze

    _add_analyze(sub)
    from softlabels.reproduce.commands import add_parser as _add_reproduce

    _add_reproduce(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from softlabels.plugins import load_plugins, pop_import_flags

    try:  # `--import MODULE` is accepted anywhere on the line, for every subcommand
        imports, argv = pop_import_flags(list(sys.argv[1:] if argv is None else argv))
    except UserError as err:
        print(f"softlabels: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    args.imports = imports
    try:
        load_plugins(imports, "--import", export=True)
        return args.func(args)
    except UserError as err:
        print(f"softlabels: error: {' '.join(str(err).split())}", file=sys.stderr)  # always one line
        return 2
    except NonFiniteLossError as err:
        print(f"softlabels: training stopped: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # `train` names the run folder to resume itself
        print("softlabels: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
