"""``softlabels reproduce``: the subcommand's arguments; the work is in ``softlabels.reproduce``."""
from __future__ import annotations

import argparse
import sys

_DESCRIPTION = """\
Run a reproduction plan (YAML: teachers, teacher->student pairs, method rows, seeds, selection grids):
train the teachers, choose each method's searched values on the validation split, run every method on every
pair for every seed, then write the results JSON, the markdown report and the temperature plot. Finished runs
are skipped and unfinished ones resumed, so the same command continues an interrupted benchmark.
"""


def _cmd_reproduce(args) -> int:
    from softlabels.reproduce import load_plan
    from softlabels.reproduce.collect import write_results
    from softlabels.reproduce.executors import make_executor
    from softlabels.reproduce.runner import check_plan, reproduce, status

    plan = load_plan(args.plan)
    if args.bias_variance:
        from softlabels.reproduce.bias_variance import write as write_bias_variance

        write_bias_variance(plan, log=_log)
        write_results(plan, log=_log)
        return 0
    if args.collect:
        write_results(plan, log=_log)
        return 0
    count = check_plan(plan)
    if args.status:
        rows = status(plan)
        for row in rows:
            print(f"{row['state']:8s} {row['stage']:9s} {row['run']}")
        done = sum(r["state"] == "done" for r in rows)
        print(f"{done}/{len(rows)} runs done ({count} possible configs checked)", file=sys.stderr)
        return 0
    _log(f"{args.plan}: {count} run configs checked")
    executor = make_executor(args.executor, output_dir=plan.output_dir, address=args.address,
                             cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                             timeout_min=args.timeout_min, slurm=_slurm_options(args.slurm),
                             submitit_cluster=args.submitit_cluster)
    outcome = reproduce(plan, jobs=args.jobs, until=args.until, log=_log, methods=args.methods, executor=executor)
    write_results(plan, log=_log)
    if outcome["failures"]:
        _log(f"{len(outcome['failures'])} runs failed (see {plan.output_dir}/failures.json)")
        return 1
    return 0


def _slurm_options(items: list[str] | None) -> dict:
    """``--slurm partition=gpu account=abc`` -> {"partition": "gpu", "account": "abc"}."""
    from softlabels.errors import ConfigError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm {item}: expected KEY=VALUE (e.g. partition=gpu)")
        out[key] = value
    return out


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``reproduce`` on the CLI's subparsers."""
    p = sub.add_parser("reproduce", help="run a benchmark plan (teachers, selection on val, seeds) and its report",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", help="plan YAML, e.g. configs/reproduce/fashion_mnist.yaml")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel worker processes (threads split among them)")
    p.add_argument("--until", choices=["teachers", "select", "final"], default="final",
                   help="stop after this stage")
    p.add_argument("--methods", nargs="+", metavar="NAME",
                   help="only these rows (their selection and final runs); for a second process beside a running one")
    p.add_argument("--executor", choices=["local", "ray", "submitit"], default="local",
                   help="local: --jobs processes here; ray: one Ray task per run; submitit: SLURM job array per stage")
    p.add_argument("--address", default=None,
                   help="ray: address of a running cluster ('auto', 'ray://host:10001'); none starts a local one")
    p.add_argument("--cpus-per-run", type=float, default=1, help="ray/submitit: CPUs requested by each run")
    p.add_argument("--gpus-per-run", type=float, default=0, help="ray/submitit: GPUs requested by each run")
    p.add_argument("--timeout-min", type=int, default=240, help="submitit: time limit of each job (minutes)")
    p.add_argument("--slurm", nargs="+", metavar="KEY=VALUE", help="submitit: SLURM parameters, e.g. partition=gpu")
    p.add_argument("--submitit-cluster", choices=["slurm", "local", "debug"], default=None,
                   help="submitit: force a backend (default: SLURM when sbatch is found, else local processes)")
    p.add_argument("--status", action="store_true", help="list the runs and whether each is done; train nothing")
    p.add_argument("--collect", action="store_true",
                   help="only regenerate the results JSON, report and plot from the run folders")
    p.add_argument("--bias-variance", action="store_true",
                   help="evaluate the final checkpoints named by results.bias_variance (per-sample bias/variance on "
                        "regularization samples), write <output_dir>/bias_variance.json, then --collect")
    p.set_defaults(func=_cmd_reproduce)
    return p
