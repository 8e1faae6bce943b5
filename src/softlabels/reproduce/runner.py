"""Run a reproduction plan stage by stage: skip finished runs, resume unfinished ones, choose on val.

``reproduce(plan)`` is idempotent: run it again (after an interruption, on another day) and it
continues where it stopped. Runs of one stage may go to several worker processes (``jobs``);
each worker uses ``cpu_count // jobs`` threads; or to Ray tasks / SLURM jobs (``executors.py``). A run that fails (diverges, or a method that does
not fit a pair) is recorded in ``failures.json`` and reported; the other runs go on.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from softlabels.engine.run_dir import RunDir
from softlabels.reproduce.plan import (
    Plan,
    RunSpec,
    default_values,
    finished_summary,
    read_metrics,
    student_run,
    teacher_checkpoint,
    teacher_dir,
    teacher_run,
)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def selection_score(spec: RunSpec, metric: str) -> float | None:
    """Validation top-1 of a finished selection run (``best_val_top1`` or ``last_val_top1``)."""
    summary = finished_summary(spec.run_dir)
    if summary is None:
        return None
    if metric == "best_val_top1":
        return summary.get("best_val_top1")
    rows = read_metrics(spec.run_dir)
    return rows[-1].get("val_top1") if rows else None


# ----------------------------------------------------------------------------- the plan as stages
def selection_runs(plan: Plan, step: int, chosen: dict[tuple[str, str], dict]) -> list[RunSpec]:
    """Step ``step`` (1-based) of every method that searches, on ``selection.seed``."""
    runs = []
    for method, spec in plan.methods.items():
        if len(spec.select) < step:
            continue
        for pair in plan.selection_pairs(method):
            start = chosen.get((pair, method), default_values(plan, method))
            key_grid = spec.select[step - 1]
            for key, grid in key_grid.items():
                for value in grid:
                    values = {**start, key: value}
                    runs.append(student_run(plan, f"select-{step}", pair, method, plan.selection.seed, values))
    return _unique(runs)


def choose(plan: Plan, step: int, chosen: dict[tuple[str, str], dict]) -> dict:
    """Update ``chosen`` with the winners of step ``step``; returns {(pair, method): [candidates]}.

    A key whose runs are not all finished is left at its current value and reported as pending.
    """
    record: dict[tuple[str, str], list] = {}
    for method, spec in plan.methods.items():
        if len(spec.select) < step:
            continue
        for pair in plan.selection_pairs(method):
            start = chosen.get((pair, method), default_values(plan, method))
            current = dict(start)
            for key, values in spec.select[step - 1].items():
                cands = []
                for value in values:
                    run = student_run(plan, "select", pair, method, plan.selection.seed, {**start, key: value})
                    cands.append({"key": key, "value": value, "score": selection_score(run, plan.selection.metric),
                                  "run_dir": str(run.run_dir)})
                record.setdefault((pair, method), []).extend(cands)
                scored = [c for c in cands if c["score"] is not None]
                if len(scored) == len(cands):
                    best = max(scored, key=lambda c: c["score"])  # max keeps the first of equal scores
                    current[key] = best["value"]
            chosen[(pair, method)] = current
    return record


def selection_state(plan: Plan) -> tuple[dict[tuple[str, str], dict], list[dict], bool]:
    """(chosen values, every candidate with its val score, whether every selection run finished)."""
    chosen: dict[tuple[str, str], dict] = {}
    table: list[dict] = []
    complete = True
    for step in range(1, plan.select_steps() + 1):
        for (pair, method), cands in choose(plan, step, chosen).items():
            for c in cands:
                complete &= c["score"] is not None
                table.append({"pair": pair, "method": method, "step": step, **c})
    return chosen, table, complete


def values_for(plan: Plan, pair: str, method: str, chosen: dict[tuple[str, str], dict]) -> dict[str, Any]:
    spec = plan.methods[method]
    where = plan.selection.on_pair or pair
    if spec.select:
        return dict(chosen.get((where, method), default_values(plan, method)))
    values: dict[str, Any] = {}
    for other, keys in spec.inherit.items():
        source = chosen.get((where, other), default_values(plan, other))
        values.update({k: source[k] for k in keys if k in source})
    return values


def final_runs(plan: Plan, chosen: dict[tuple[str, str], dict]) -> list[RunSpec]:
    """Every method x pair x seed with its chosen values, in plan order (method, pair, seed)."""
    runs = []
    for method in plan.methods:
        for pair in plan.method_pairs(method):
            values = values_for(plan, pair, method, chosen)
            runs.extend(student_run(plan, "final", pair, method, seed, values) for seed in plan.method_seeds(method))
    return _unique(runs)


def _unique(runs: Iterable[RunSpec]) -> list[RunSpec]:
    seen, out = set(), []
    for run in runs:
        if run.run_dir not in seen:
            seen.add(run.run_dir)
            out.append(run)
    return out


def check_plan(plan: Plan) -> int:
    """Validate the config of every run the plan can make (all grid points); returns their count.

    Raises ConfigError naming the plan file, the run and the key before anything is trained.
    """
    from softlabels.config import validate_config
    from softlabels.errors import ConfigError

    specs = [teacher_run(plan, t) for t in plan.teachers]
    for step in range(1, plan.select_steps() + 1):
        specs += selection_runs(plan, step, {})
    specs += final_runs(plan, {})
    for spec in specs:
        try:
            validate_config(spec.config, f"{plan.source} ({spec.label})", check_files=False)
        except ConfigError as exc:
            raise ConfigError(str(exc)) from None
    val = plan.base.get("data", {}).get("val_split", 0)
    if plan.select_steps() and not val:
        raise ConfigError(f"{plan.source}: base.data.val_split: selection grids need a validation split (> 0)")
    return len(specs)


# ----------------------------------------------------------------------------- execution
def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_one(config: dict, label: str) -> dict:
    """Train (or resume, or skip) one run; returns {"ok": bool, ...} and never raises."""
    from softlabels.config import validate_config
    from softlabels.engine.trainer import run_or_resume

    t0 = time.perf_counter()
    try:
        summary = run_or_resume(validate_config(config, label))
        return {"ok": True, "best_top1": summary.get("best_top1"), "last_top1": summary.get("last_top1"),
                "seconds": time.perf_counter() - t0}
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing run must not stop the plan; it is recorded
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=3),
                "seconds": time.perf_counter() - t0}


def run_all(specs: list[RunSpec], jobs: int = 1, log: Log = _stderr, failures: dict | None = None,
            executor=None) -> dict:
    """Run ``specs`` (finished ones are skipped); returns {label: result}.

    ``executor`` (``softlabels.reproduce.executors``: Ray, submitit) runs them elsewhere instead of ``jobs``
    local processes; results are reported here as they come back.
    """
    todo = [s for s in specs if not s.finished()]
    results: dict[str, dict] = {}
    if not todo:
        return results
    total = len(todo)

    def report(i: int, spec: RunSpec, res: dict) -> None:
        results[spec.label] = res
        if res["ok"]:
            log(f"[{i}/{total}] {spec.label}: best {res['best_top1']:.2f} last {res['last_top1']:.2f} "
                f"({res['seconds']:.0f} s)")
            if failures is not None:
                failures.pop(spec.label, None)
        else:
            log(f"[{i}/{total}] {spec.label}: FAILED {res['error']}")
            if failures is not None:
                failures[spec.label] = {"error": res["error"], "run_dir": str(spec.run_dir)}

    if executor is not None:
        for i, (spec, res) in enumerate(executor.run(todo, log), 1):
            report(i, spec, res)
        return results
    jobs = min(jobs, total)
    if jobs <= 1:  # in this process, with all its threads
        for i, spec in enumerate(todo, 1):
            log(f"[{i}/{total}] {spec.label}: running")
            report(i, spec, _train_one(spec.config, spec.label))
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_train_one, s.config, s.label): s for s in todo}
        log(f"{total} runs on {jobs} workers x {threads} threads")
        for i, fut in enumerate(as_completed(futures), 1):
            report(i, futures[fut], fut.result())
    return results


def _load_failures(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _check_only(plan: Plan, only: set[str]) -> None:
    """``only`` names known methods, and the methods they inherit from have finished their selection."""
    from softlabels.errors import ConfigError

    unknown = sorted(only - set(plan.methods))
    if unknown:
        raise ConfigError(f"--methods: unknown method(s) {', '.join(unknown)}; the plan has {', '.join(plan.methods)}")
    _, table, _ = selection_state(plan)
    for method in sorted(only):
        for other in plan.methods[method].inherit:
            if other not in only and any(c["score"] is None for c in table if c["method"] == other):
                raise ConfigError(f"--methods: {method} inherits {other}'s chosen values, but {other}'s selection "
                                  f"runs have not all finished; run them first (or add {other} to --methods)")


def needed_teachers(plan: Plan, only: set[str] | None = None) -> list[str]:
    """The teachers that the rows in ``only`` (all rows: None) distil from, for their final and selection
    runs, in plan order; so ``--methods`` beside a running process waits for no teacher it does not use."""
    if only is None:
        return list(plan.teachers)
    pairs = set()
    for method in only:
        pairs.update(plan.method_pairs(method))
        if plan.methods[method].select:
            pairs.update(plan.selection_pairs(method))
    used = {plan.pairs[p].teacher for p in pairs}
    return [t for t in plan.teachers if t in used]


def reproduce(plan: Plan, jobs: int = 1, until: str = "final", log: Log = _stderr,
              methods: list[str] | None = None, executor=None) -> dict:
    """Teachers, then each selection step, then the final runs (stopping after ``until``).

    ``methods`` restricts the selection and final runs to those rows (e.g. to run some rows in a
    second process while another works on the rest; the two must not share methods).
    Returns {"chosen": ..., "failures": ...}; the caller collects the results.
    """
    only = set(methods) if methods else None
    if only is not None:
        _check_only(plan, only)

    def keep(specs: list[RunSpec]) -> list[RunSpec]:
        return specs if only is None else [s for s in specs if s.method in only]

    out = Path(plan.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    failures_path = out / "failures.json"
    failures = _load_failures(failures_path)

    def save_failures() -> None:
        failures_path.write_text(json.dumps(failures, indent=2, sort_keys=True))

    teachers = needed_teachers(plan, only)
    log(f"== teachers ({len(teachers)})")
    run_all([teacher_run(plan, t) for t in teachers], jobs, log, failures, executor)
    save_failures()
    # a student never distils from an unfinished teacher (its best.pt exists from the first epoch on)
    missing = [t for t in teachers
               if not teacher_checkpoint(plan, t).is_file() or finished_summary(teacher_dir(plan, t)) is None]
    if missing:
        log(f"unfinished teachers: {', '.join(missing)}; fix the failure above and run again")
        return {"chosen": {}, "failures": failures}
    chosen: dict[tuple[str, str], dict] = {}
    if until != "teachers":
        for step in range(1, plan.select_steps() + 1):
            specs = keep(selection_runs(plan, step, chosen))
            log(f"== selection step {step} ({len(specs)} runs, seed {plan.selection.seed}, {plan.selection.metric})")
            run_all(specs, jobs, log, failures, executor)
            save_failures()
            choose(plan, step, chosen)
        for (pair, method), values in chosen.items():
            log(f"chosen on val: {pair}/{method}: {values}")
    if until == "final":
        specs = keep(final_runs(plan, chosen))
        log(f"== final runs ({len(specs)}: {len(plan.seeds)} seeds)")
        run_all(specs, jobs, log, failures, executor)
        save_failures()
    return {"chosen": chosen, "failures": failures}


def status(plan: Plan) -> list[dict]:
    """Every run the plan makes now (with the current selection) and whether it is done/partial/todo."""
    chosen, _, complete = selection_state(plan)
    specs = [teacher_run(plan, t) for t in plan.teachers]
    step_chosen: dict[tuple[str, str], dict] = {}
    for step in range(1, plan.select_steps() + 1):
        specs += selection_runs(plan, step, step_chosen)
        choose(plan, step, step_chosen)
    specs += final_runs(plan, chosen)
    rows = []
    for spec in _unique(specs):
        state = "done" if spec.finished() else "partial" if RunDir(spec.run_dir).last_path.is_file() else "todo"
        rows.append({"stage": spec.stage, "run": spec.label, "state": state, "run_dir": str(spec.run_dir)})
    if not complete:
        rows.append({"stage": "final", "run": "(final runs depend on the selection, not finished yet)",
                     "state": "pending", "run_dir": ""})
    return rows
