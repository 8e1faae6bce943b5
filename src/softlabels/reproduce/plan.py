"""A reproduction plan (YAML): teachers, teacher->student pairs, method rows, seeds, selection grids.

``expand`` turns a plan into the concrete runs of each stage:

- ``teachers``: one run per teacher (seed = ``selection.seed``); its val-selected ``best.pt`` is the
  checkpoint every pair that names it distils from.
- ``select-K``: step K of each method's coordinate search; step K's grid is run with the values
  chosen at steps < K, on ``selection.seed``, and the value with the best validation top-1 wins
  (ties: the first listed). The test set is never looked at.
- ``final``: every method on every pair for every seed in ``seeds`` with its chosen values (a
  method may ``inherit`` another method's chosen values instead of searching its own).

Runs are folders ``<output_dir>/<pair>/<method>/<tag>/seed<N>`` (``tag`` spells the selected
values, e.g. ``T4-alpha2.25``); a final run whose config equals a selection run is the same
folder, so it is not trained twice.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from softlabels.engine.run_dir import RunDir
from softlabels.errors import ConfigError

SHORT_NAMES = {"temperature": "T"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairSpec(_Strict):
    teacher: str = Field(description="a key of `teachers`")
    student: str = Field(description="a registered model name")
    overrides: dict[str, Any] = Field(default_factory=dict, description="experiment keys for every run of this pair")


class MethodSpec(_Strict):
    """One row: experiment overrides (``method: {...}``, ``teacher: {cache: true}``, ...)."""

    overrides: dict[str, Any] = Field(default_factory=dict)
    select: list[dict[str, list[Any]]] = Field(
        default_factory=list, description="coordinate search: steps of one dotted key and its grid each")
    inherit: dict[str, list[str]] = Field(default_factory=dict, description="{method: [dotted keys]} to copy")
    label: str | None = Field(None, description="row name in the report (default: the method's key)")
    pairs: list[str] | None = Field(None, description="only these pairs (default: all)")
    seeds: list[int] | None = Field(None, min_length=1, description="only these seeds (default: the plan's)")

    @model_validator(mode="after")
    def _one_source(self):
        if self.select and self.inherit:
            raise ValueError("a method either searches its values (select) or inherits them, not both")
        for step in self.select:
            if len(step) != 1:
                raise ValueError(f"each select step searches one dotted key, got {sorted(step)}")
            for key, values in step.items():
                if not values:
                    raise ValueError(f"select grid for {key} is empty")
        return self


class SelectionSpec(_Strict):
    seed: int = 0
    metric: Literal["best_val_top1", "last_val_top1"] = "best_val_top1"
    on_pair: str | None = Field(None, description="search on this pair only and use its choice for every pair")


CLAIM_ROLES = ("student", "kd", "kd_same_scale", "wsl", "wsl_kd_scale", "filtered")


class ClaimsSpec(_Strict):
    """Rows that the generated "what this says about WSL" section compares (version 2 reports)."""

    pair: str = Field(description="the pair whose rows are compared")
    student: str | None = None
    kd: str | None = Field(None, description="KD at the CRD-benchmark scaling (CE 0.1 / soft 0.9)")
    kd_same_scale: str | None = Field(None, description="KD at WSL's scaling (CE 1 / soft alpha, every weight 1)")
    wsl: str = Field(description="WSL as in the paper (CE 1 / soft alpha)")
    wsl_kd_scale: str | None = Field(None, description="WSL's weights at KD's scaling (CE 0.1 / soft 0.9)")
    filtered: str | None = Field(None, description="soft loss of regularization samples removed")
    strength: dict[str, list[str]] = Field(
        default_factory=dict, description="{pair: [student row, KD row, WSL row]} for the teacher-strength comparison")
    shorter_schedule: dict[str, str] = Field(
        default_factory=dict, description="{role: row} of the same grid on a shorter schedule (roles student, kd, "
                                          "kd_same_scale, wsl, wsl_kd_scale, filtered): the convergence check "
                                          "(student vs this student) and the comparisons again there")

    def roles(self) -> dict[str, str | None]:
        """{role: row} of the main grid (CLAIM_ROLES)."""
        return {role: getattr(self, role) for role in CLAIM_ROLES}


class BiasVarianceSpec(_Strict):
    """``reproduce --bias-variance``: per-sample bias/variance over seeds on one pair's regularization samples."""

    pair: str = Field(description="the pair whose final models are evaluated")
    reference: str = Field(description="the student-alone row: the reference of every difference")
    definition: str | None = Field(
        None, description="a student-alone row trained on other seeds whose average model defines the regularization "
                          "samples; default: the reference itself (biased: the groups are then chosen by the "
                          "reference's own confidence, so any other model looks worse on them)")
    rows: list[str] = Field(min_length=1, description="distilled rows, each grouped at its own temperature")
    compare: dict[str, str] = Field(default_factory=dict,
                                    description="{row: other}: row − other on the row's regularization samples")
    checkpoint: Literal["best", "last"] = "best"


class GroupSpec(_Strict):
    """A sub-table of each pair's rows in the report (version 2 layouts)."""

    title: str
    rows: list[str] = Field(min_length=1, description="rows in this table, in this order")
    baseline: str | list[str] | None = Field(
        None, description="row whose paired best top-1 difference is shown (Δ column); a list: the first of them "
                          "that runs on the pair")
    note: str | None = Field(None, description="a sentence printed under the title")

    def baselines(self) -> list[str]:
        return [self.baseline] if isinstance(self.baseline, str) else list(self.baseline or [])


class ResultsSpec(_Strict):
    version: Literal[1, 2] = Field(
        1, description="report layout: 1 the original (committed v1 reports regenerate byte for byte); 2 adds "
                       "confidence intervals and effect sizes, curves, share analysis and the WSL summary")
    json_path: str = Field("docs/results/results.json", alias="json")
    markdown: str = "docs/results.md"
    figures: str = "docs/results"
    notes: str | None = Field(None, description="hand-written markdown appended to the report")
    paper_numbers: str | None = Field(None, description="YAML of published numbers shown as 'not run here'")
    paired: dict[str, list[str]] = Field(
        default_factory=dict, description="{row: [rows]}: compare row with each of those rows, seed by seed")
    curves: list[str] = Field(default_factory=list, description="rows whose per-epoch validation top-1 is plotted")
    share: list[str] = Field(
        default_factory=list, description="rows whose regularization-sample share is related to accuracy across seeds")
    share_paired: dict[str, list[str]] = Field(
        default_factory=dict, description="{row: [rows]}: compare the regularization-sample share seed by seed")
    claims: ClaimsSpec | None = None
    bias_variance: BiasVarianceSpec | None = None
    groups: list[GroupSpec] = Field(
        default_factory=list, description="split each pair's row table into these titled tables (rest: 'Other rows')")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Plan(_Strict):
    name: str
    output_dir: str
    seeds: list[int] = Field(min_length=1)
    base: dict[str, Any] = Field(description="experiment keys shared by every run")
    teachers: dict[str, dict[str, Any]] = Field(min_length=1, description="name -> experiment overrides")
    pairs: dict[str, PairSpec] = Field(min_length=1)
    methods: dict[str, MethodSpec] = Field(min_length=1)
    selection: SelectionSpec = SelectionSpec()
    results: ResultsSpec = ResultsSpec()
    source: str = Field("<plan>", exclude=True)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @model_validator(mode="after")
    def _references(self):
        for name, pair in self.pairs.items():
            if pair.teacher not in self.teachers:
                raise ValueError(f"pairs.{name}.teacher: unknown teacher {pair.teacher!r} (known: {sorted(self.teachers)})")
        for name, spec in self.methods.items():
            for other in spec.inherit:
                if other not in self.methods or not self.methods[other].select:
                    raise ValueError(f"methods.{name}.inherit: {other!r} is not a method with a select grid")
            for pair in spec.pairs or []:
                if pair not in self.pairs:
                    raise ValueError(f"methods.{name}.pairs: unknown pair {pair!r}")
        if self.selection.on_pair is not None and self.selection.on_pair not in self.pairs:
            raise ValueError(f"selection.on_pair: unknown pair {self.selection.on_pair!r}")
        res = self.results
        for key, table in (("paired", res.paired), ("share_paired", res.share_paired),
                           ("curves", {r: [] for r in res.curves}), ("share", {r: [] for r in res.share}),
                           ("groups", {r: [] for g in res.groups for r in [*g.rows, *g.baselines()]})):
            for row, others in table.items():
                for name in [row, *others]:
                    if name not in self.methods:
                        raise ValueError(f"results.{key}: unknown method {name!r}")
        if res.claims is not None:
            c = res.claims
            if c.pair not in self.pairs:
                raise ValueError(f"results.claims.pair: unknown pair {c.pair!r}")
            named = [*c.roles().values(), *c.shorter_schedule.values()]
            extra = set(c.shorter_schedule) - set(CLAIM_ROLES)
            if extra:
                raise ValueError(f"results.claims.shorter_schedule: unknown roles {sorted(extra)} (use "
                                 f"{', '.join(CLAIM_ROLES)})")
            for pair, rows in c.strength.items():
                if pair not in self.pairs:
                    raise ValueError(f"results.claims.strength: unknown pair {pair!r}")
                if len(rows) != 3:
                    raise ValueError(f"results.claims.strength.{pair}: give [student row, KD row, WSL row]")
                named += rows
            for name in named:
                if name is not None and name not in self.methods:
                    raise ValueError(f"results.claims: unknown method {name!r}")
        if res.bias_variance is not None:
            bv = res.bias_variance
            if bv.pair not in self.pairs:
                raise ValueError(f"results.bias_variance.pair: unknown pair {bv.pair!r}")
            compared = [bv.reference, *bv.rows, *bv.compare, *bv.compare.values()]
            if bv.definition is not None and bv.definition in compared:
                raise ValueError("results.bias_variance.definition must be a row of its own (other seeds), not one "
                                 "of the compared rows")
            for name in [*compared, *([bv.definition] if bv.definition else [])]:
                if name not in self.methods:
                    raise ValueError(f"results.bias_variance: unknown method {name!r}")
        return self

    def method_pairs(self, method: str) -> list[str]:
        return list(self.methods[method].pairs or self.pairs)

    def selection_pairs(self, method: str) -> list[str]:
        """The pairs on which ``method``'s grids run (``selection.on_pair`` or each of its pairs)."""
        return [self.selection.on_pair] if self.selection.on_pair else self.method_pairs(method)

    def method_seeds(self, method: str) -> list[int]:
        return list(self.methods[method].seeds or self.seeds)

    def epochs_of(self, method: str) -> int | None:
        """The schedule length (epochs) of a row: its own override, else the plan's base."""
        own = get_dotted(self.methods[method].overrides, "schedule.epochs")
        return own if own is not None else get_dotted(self.base, "schedule.epochs")

    def select_steps(self) -> int:
        return max((len(m.select) for m in self.methods.values()), default=0)


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; errors name the file and the key."""
    from softlabels.config import read_yaml

    return parse_plan(read_yaml(path, kind="plan"), str(path))


def parse_plan(raw: Any, source: str = "<plan>") -> Plan:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a plan is a mapping of keys (name, output_dir, seeds, base, ...)")
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {loc}: {err['msg']}") from None
    plan.source = source
    return plan


# ----------------------------------------------------------------------------- runs
@dataclass
class RunSpec:
    """One training run of the plan."""

    stage: str  # "teachers", "select-1", ..., "final"
    pair: str | None
    method: str
    seed: int
    values: dict[str, Any]  # selected / inherited dotted keys -> value
    config: dict[str, Any] = field(repr=False)

    @property
    def run_dir(self) -> Path:
        return Path(self.config["output_dir"]) / self.config["name"]

    @property
    def label(self) -> str:
        where = f"{self.pair}/{self.method}" if self.pair else f"teacher {self.method}"
        tag = tag_of(self.values)
        return f"{where}/{tag}/seed{self.seed}" if self.pair else where

    def finished(self) -> bool:
        return finished_summary(self.run_dir) is not None


def finished_summary(run_dir: Path | str) -> dict | None:
    """The run's summary.json when it records all its epochs, else None (missing or unfinished)."""
    run = RunDir(run_dir)
    return run.summary() if run.is_finished() else None


def read_metrics(run_dir: Path | str) -> list[dict]:
    """The rows of the run's metrics.jsonl ([] when there is none)."""
    return RunDir(run_dir).metrics()


def merge(base: dict, extra: dict) -> dict:
    """Deep merge of nested dicts (``extra`` wins); inputs are not modified."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    node = cfg
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def get_dotted(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _fmt_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def tag_of(values: dict[str, Any]) -> str:
    """Folder tag of selected values: ``{"method.temperature": 4, "method.alpha": 2.25}`` -> ``T4-alpha2.25``."""
    if not values:
        return "default"
    parts = []
    for key, value in values.items():
        last = key.split(".")[-1]
        parts.append(f"{SHORT_NAMES.get(last, last)}{_fmt_value(value)}")
    return "-".join(parts)


def teacher_dir(plan: Plan, teacher: str) -> Path:
    return Path(plan.output_dir) / "teachers" / teacher


def teacher_checkpoint(plan: Plan, teacher: str) -> Path:
    return teacher_dir(plan, teacher) / "best.pt"


def teacher_run(plan: Plan, teacher: str) -> RunSpec:
    cfg = merge(plan.base, plan.teachers[teacher])
    cfg = merge(cfg, {"method": {"name": "ce"}, "seed": plan.selection.seed, "name": teacher,
                      "output_dir": str(Path(plan.output_dir) / "teachers")})
    cfg.pop("teacher", None)
    return RunSpec("teachers", None, teacher, plan.selection.seed, {}, cfg)


def student_run(plan: Plan, stage: str, pair: str, method: str, seed: int, values: dict[str, Any]) -> RunSpec:
    """The run of ``method`` on ``pair`` with ``seed`` and the given dotted values."""
    p, m = plan.pairs[pair], plan.methods[method]
    cfg = merge(merge(plan.base, p.overrides), m.overrides)
    for key, value in values.items():
        set_dotted(cfg, key, value)
    method_name = get_dotted(cfg, "method.name") or "ce"
    cfg["student"] = merge(cfg.get("student", {}), {"name": p.student})
    if method_name in ("ce", "tf_kd"):
        cfg.pop("teacher", None)
    else:
        teacher_model = plan.teachers[p.teacher].get("student", {}).get("name")
        cfg["teacher"] = merge(cfg.get("teacher", {}), {
            "name": teacher_model, "checkpoint": str(teacher_checkpoint(plan, p.teacher))})
        if cfg["teacher"].get("cache") and not cfg["teacher"].get("cache_path"):
            # one cache per teacher and seed, shared by the rows; a row on another schedule has other slots
            epochs = get_dotted(cfg, "schedule.epochs")
            suffix = "" if epochs == get_dotted(plan.base, "schedule.epochs") else f"_e{epochs}"
            cfg["teacher"]["cache_path"] = str(Path(plan.output_dir) / "teacher_cache" / f"{p.teacher}_seed{seed}{suffix}")
    cfg["seed"] = seed
    cfg["name"] = f"seed{seed}"
    cfg["output_dir"] = str(Path(plan.output_dir) / pair / method / tag_of(values))
    return RunSpec(stage, pair, method, seed, dict(values), cfg)


def default_values(plan: Plan, method: str) -> dict[str, Any]:
    """Every searched key at its starting value: the method's own setting, else the first grid value.

    Selection runs always spell every searched key, so a step-2 run at the starting value is the
    same folder as the step-1 winner and is not trained again.
    """
    spec = plan.methods[method]
    out: dict[str, Any] = {}
    for step in spec.select:
        for key, grid in step.items():
            current = get_dotted(spec.overrides, key)
            out.setdefault(key, grid[0] if current is None else current)
    return out
