"""Typed results of the analyses: what ``softlabels analyze`` writes as JSON and ``softlabels report`` reads.

Each result is a pydantic model whose ``analysis`` field names the experiment; :func:`load_result` reads
any of them back (the report draws each kind with its own figure, never by guessing key names).
Field order is the order of the JSON file. Units: top-1 in %, fractions in [0, 1], bias, variance and
risk in nats per test sample (cross-entropy, Heskes), ``mse_*`` in squared probability units.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from softlabels.errors import UserError

__all__ = [
    "AnalysisResult", "BiasVarianceResult", "FilteringResult", "SoftLabelBVResult", "TemperatureSweepResult",
    "load_result", "result_from_json",
]

Num = float | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict:
        """The JSON object (same keys and order as the file)."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------- split runs
class SplitRun(_Model):
    """One model trained on one split: its run folder name, split and top-1 (%)."""

    run: str
    partition: int
    split: int
    seed: int
    train_seed: int
    train_size: int
    best_top1: Num
    last_top1: Num


# --------------------------------------------------------------------------------------------- bias-variance
class _Decomposition(_Model):
    """Mean bias/variance/risk of an ensemble (nats), the MSE estimate, accuracies (%) and the standard errors
    over the test samples (``*_sem``; None in files written before they were recorded)."""

    noise: Num
    bias: Num
    variance: Num
    risk: Num
    mse_bias2: Num
    mse_variance: Num
    mse_risk: Num
    member_top1_mean: Num
    member_top1_std: Num
    ensemble_top1: Num
    num_models: int
    bias_sem: Num = None
    variance_sem: Num = None
    risk_sem: Num = None


class _ModelHead(_Model):
    name: str
    model: str
    width: int | None
    method: str
    parameters: int | None


class ModelDecomposition(_Decomposition, _ModelHead):
    """One student model (or width): its name and size, then the decomposition, then its split runs.
    (Pydantic orders fields by reversed bases: the head's first, as in the JSON files.)"""

    runs: list[SplitRun]


class BiasVarianceResult(_Model):
    """``analyze bias-variance``: one entry per model (or width)."""

    analysis: Literal["bias-variance"]
    dataset: str | None
    method: dict[str, Any]
    teacher: dict[str, Any] | None
    splits: int
    partitions: int
    seeds: list[int]
    checkpoint: str
    train_pool_size: int
    split_sizes: list[int]
    units: str
    models: list[ModelDecomposition]


# --------------------------------------------------------------------------------------------- temperature sweep
class SweepRun(_Model):
    run: str
    temperature: float
    seed: int
    best_top1: Num
    last_top1: Num
    reg_fraction_mean: Num
    reg_fraction_last: Num
    reg_fraction_t1_mean: Num
    reg_fraction_t1_last: Num
    reg_fraction_per_epoch: list[Num]
    test_top1_per_epoch: list[Num]


class SweepTemperature(_Model):
    """Means (and sample std over seeds) at one temperature."""

    temperature: float
    runs: int
    best_top1: Num
    best_top1_std: Num
    last_top1: Num
    last_top1_std: Num
    reg_fraction_mean: Num
    reg_fraction_mean_std: Num
    reg_fraction_last: Num
    reg_fraction_last_std: Num
    reg_fraction_t1_mean: Num
    reg_fraction_t1_mean_std: Num


class CountVsTemperature(_Model):
    spearman: Num
    trend_sign: int | None
    monotone_increasing: bool
    rises_with_temperature: bool | None
    measure: str


class AcrossTemperatures(_Model):
    pearson_best: Num
    spearman_best: Num
    pearson_last: Num
    spearman_last: Num


class AcrossRuns(_Model):
    pearson_best: Num
    spearman_best: Num


class AccuracyVsCount(_Model):
    across_temperatures: AcrossTemperatures
    across_runs: AcrossRuns
    within_temperature_spearman_best: dict[str, Num]
    falls_as_count_rises: bool | None


class SweepAnswers(_Model):
    count_vs_temperature: CountVsTemperature
    accuracy_vs_count: AccuracyVsCount


class TemperatureSweepResult(_Model):
    """``analyze temperature-sweep``: KD at several temperatures."""

    analysis: Literal["temperature-sweep"]
    dataset: str | None
    teacher: dict[str, Any]
    method: dict[str, Any]
    temperatures: list[float]
    seeds: list[int]
    per_temperature: list[SweepTemperature]
    answers: SweepAnswers
    runs: list[SweepRun]


# --------------------------------------------------------------------------------------------- filtering
class FilteringRun(_Model):
    arm: str
    seed: int
    run: str
    best_top1: Num
    last_top1: Num
    reg_fraction_mean: Num
    reg_fraction_last: Num


class FilteringArm(_Model):
    """Mean and sample std over seeds of one arm (top-1 in %, fractions in [0, 1])."""

    arm: str
    n: int
    best_top1_mean: Num
    best_top1_std: Num
    last_top1_mean: Num
    last_top1_std: Num
    reg_fraction_last_mean: Num
    reg_fraction_last_std: Num
    best_top1_pm: str
    last_top1_pm: str


class PairedDifference(_Model):
    best_top1: Num
    last_top1: Num


class FilteringAnswers(_Model):
    filtering_hurts: bool | None
    wsl_beats_kd: bool | None


class FilteringResult(_Model):
    """``analyze filtering``: KD, KD with regularization samples filtered out, and WSL, same seeds."""

    analysis: Literal["filtering"]
    dataset: str | None
    teacher: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    seeds: list[int]
    arms: list[FilteringArm]
    paired_differences: dict[str, PairedDifference]
    answers: FilteringAnswers
    runs: list[FilteringRun]


# --------------------------------------------------------------------------------------------- soft-label bias-variance
class _MethodHead(_Model):
    name: str
    method: dict[str, Any]


class MethodDecomposition(_Decomposition, _MethodHead):
    """One method's students: its name and method section, then the decomposition."""


class RegularizationShare(_Model):
    definition: str
    temperature: float
    count: int
    num_samples: int
    fraction: Num
    ce_vote_mean: Num


class BiasVarianceChange(_Model):
    """Change of a method against CE on one group of test samples (means in nats, fractions in [0, 1])."""

    method: str
    group: str
    count: int
    fraction: Num
    mean_delta_bias: Num = None
    mean_delta_variance: Num = None
    mean_delta_risk: Num = None
    frac_bias_up: Num = None
    frac_variance_down: Num = None
    frac_bias_up_variance_down: Num = None


class SoftLabelBVResult(_Model):
    """``analyze soft-label-bv``: CE, KD and WSL students on the same splits."""

    analysis: Literal["soft-label-bv"]
    dataset: str | None
    teacher: dict[str, Any]
    teacher_top1: Num
    temperature: float
    splits: int
    partitions: int
    seeds: list[int]
    checkpoint: str
    units: str
    methods: list[MethodDecomposition]
    regularization: RegularizationShare
    changes: list[BiasVarianceChange]
    runs: dict[str, list[SplitRun]]


AnalysisResult = Annotated[
    BiasVarianceResult | TemperatureSweepResult | FilteringResult | SoftLabelBVResult,
    Field(discriminator="analysis"),
]
_ADAPTER: TypeAdapter = TypeAdapter(AnalysisResult)
KINDS = ("bias-variance", "temperature-sweep", "filtering", "soft-label-bv")


def result_from_json(data: Any, source: str = "<result>") -> AnalysisResult:
    """A typed result from its JSON object; UserError naming ``source`` when it is not one."""
    if not isinstance(data, dict) or data.get("analysis") not in KINDS:
        raise UserError(f"{source}: not an analysis result of `softlabels analyze` (its 'analysis' key must be "
                        f"one of {', '.join(KINDS)})")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UserError(f"{source}: damaged {data['analysis']} result at '{where}': {first.get('msg')}") from None


def load_result(path: str | Path) -> AnalysisResult:
    """Read one analysis JSON file (``bias_variance.json``, ``temperature_sweep.json``, ...)."""
    from softlabels.io import read_json

    return result_from_json(read_json(path, "analysis result"), str(path))
