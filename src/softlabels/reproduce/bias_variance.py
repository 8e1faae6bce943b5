"""``reproduce --bias-variance``: per-sample bias and variance of one pair's final models, over seeds, on the
regularization samples and on the others (the third part of the v2 benchmark's claim 5).

For each row (the student-alone reference and the distilled rows of ``results.bias_variance``) the M seed
models' test log-probabilities give, per test sample (Heskes decomposition, nats): bias = −log ȳ(y), variance
= mean_m KL(ȳ ‖ p_m), risk = their sum, with ȳ the normalised geometric mean of the M models.

A test sample is a regularization sample *for a distilled row at its own T* when a student-alone average model
softened at T puts more mass on the true class than the teacher: softmax(log ȳ_def / T)(y) > p_teacher^T(y).
ȳ_def comes from the ``definition`` row, student-alone runs on *other seeds* than the compared models: a group
chosen by the reference's own confidence would make every other model look worse on it (regression to the mean).
Differences row − reference are paired by test sample; their 95 % intervals are over the test samples for these
fixed models (they do not include the spread between training runs).

Variance here is over seeds (initialisation, augmentation and batch order) on one fixed training set, not over
training sets D as in the paper's decomposition: ``softlabels analyze soft-label-bv`` trains on disjoint splits
for that. The checkpoints are read from the run folders; the report reads only the JSON written here, so it
regenerates from committed files.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from softlabels.reproduce.plan import Plan
from softlabels.stats import paired_comparison

__all__ = ["bias_variance", "claim_lines", "load", "markdown_lines", "output_path", "write"]

DEFINITION = ("test sample with softmax(log ȳ_def / T)(y) > p_teacher^T(y): ȳ_def the geometric-mean model of "
              "the student-alone runs of the definition row, T the distilled row's own temperature")
# "the definition row" is replaced by the row's name and seeds (or by the reference row when there is none)
GROUPS = ("regularization", "other", "all")
FIELDS = ("bias", "variance", "risk")


def output_path(plan: Plan) -> Path:
    """``<output_dir>/bias_variance.json``: the one file this step writes (committed with the run folders)."""
    return Path(plan.output_dir) / "bias_variance.json"


def _interval(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean of a − b over samples with its 95 % t-interval (no per-sample list)."""
    res = paired_comparison(a.tolist(), b.tolist())
    return {k: res[k] for k in ("n", "mean_diff", "ci_low", "ci_high")}


def _group_stats(row_bv, ref_bv, masks: dict[str, torch.Tensor]) -> dict:
    out = {}
    for group, mask in masks.items():
        count = int(mask.sum())
        entry: dict = {"count": count, "fraction": count / mask.numel() if mask.numel() else None}
        if count >= 2:
            entry["reference"] = {f: float(getattr(ref_bv, f)[mask].mean()) for f in FIELDS}
            entry["row"] = {f: float(getattr(row_bv, f)[mask].mean()) for f in FIELDS}
            entry["delta"] = {f: _interval(getattr(row_bv, f)[mask], getattr(ref_bv, f)[mask]) for f in FIELDS}
        out[group] = entry
    return out


def _temperature(name: str, entry: dict, run_dir: str) -> float:
    """The row's distillation temperature: its selected/inherited value, else its run's config.yaml."""
    import yaml

    from softlabels.errors import ConfigError

    value = entry["values"].get("method.temperature")
    if value is None:
        value = (yaml.safe_load((Path(run_dir) / "config.yaml").read_text()).get("method") or {}).get("temperature")
    if value is None:
        raise ConfigError(f"results.bias_variance: row {name!r} has no method.temperature (not a distilled row)")
    return float(value)


def _definition(spec, methods: dict, seeds: list[int], log=None):
    """The decomposition of the definition row's models (its own seeds, none shared with ``seeds``) and those
    seeds; (None, []) without a definition row."""
    from softlabels.analysis.bias_variance import cross_entropy_bias_variance
    from softlabels.analysis.evaluation import test_log_probs
    from softlabels.errors import ConfigError

    if spec.definition is None:
        return None, []
    entry = methods.get(spec.definition)
    if not entry or not entry["seeds"]:
        raise ConfigError(f"results.bias_variance.definition: row {spec.definition!r} has no finished runs on "
                          f"{spec.pair} yet; run the plan first")
    shared = sorted(set(entry["seeds"]) & set(seeds))
    if shared:
        raise ConfigError(f"results.bias_variance.definition: row {spec.definition!r} shares seeds {shared} with the "
                          "compared rows; give it other seeds (methods.<row>.seeds)")
    if log:
        log(f"bias/variance: {spec.definition}: {len(entry['run_dirs'])} models define the regularization samples")
    lp, targets = test_log_probs(entry["run_dirs"], checkpoint=spec.checkpoint)
    return cross_entropy_bias_variance(lp, targets), list(entry["seeds"])


def bias_variance(plan: Plan, log=None) -> dict:
    """Evaluate the checkpoints named by ``plan.results.bias_variance`` and return the JSON mapping."""
    from softlabels.analysis.bias_variance import cross_entropy_bias_variance, true_class_probability
    from softlabels.analysis.evaluation import teacher_log_probs, test_log_probs
    from softlabels.engine import experiment_from_run
    from softlabels.errors import ConfigError
    from softlabels.reproduce.collect import collect

    spec = plan.results.bias_variance
    if spec is None:
        raise ConfigError("the plan has no results.bias_variance section: add one naming the pair and the rows")
    results = collect(plan)
    methods = results["pairs"][spec.pair]["methods"]
    names = list(dict.fromkeys([spec.reference, *spec.rows, *spec.compare, *spec.compare.values()]))
    missing = [n for n in names if n not in methods or not methods[n]["seeds"]]
    if missing:
        raise ConfigError(f"results.bias_variance: rows {missing} have no finished runs on {spec.pair} yet; "
                          "run the plan first")
    seeds = sorted(set.intersection(*(set(methods[n]["seeds"]) for n in names)))
    if len(seeds) < 2:
        raise ConfigError(f"results.bias_variance needs at least 2 seeds finished by every row, got {seeds}")
    decomps, temps, tops = {}, {}, {}
    for name in names:
        entry = methods[name]
        dirs = [d for s, d in zip(entry["seeds"], entry["run_dirs"]) if s in seeds]
        if log:
            log(f"bias/variance: {name}: {len(dirs)} models ({spec.checkpoint} checkpoints)")
        lp, targets = test_log_probs(dirs, checkpoint=spec.checkpoint)
        decomps[name] = cross_entropy_bias_variance(lp, targets)
        tops[name] = float((decomps[name].average.argmax(-1) == targets).double().mean() * 100)
        if name != spec.reference:
            temps[name] = _temperature(name, entry, dirs[0])
    teacher_run = methods[spec.rows[0]]["run_dirs"][0]
    teacher_lp = teacher_log_probs(experiment_from_run(teacher_run))
    ref = decomps[spec.reference]
    definer, def_seeds = _definition(spec, methods, seeds, log)

    def masks(temperature: float) -> dict[str, torch.Tensor]:
        avg = ref.average if definer is None else definer.average
        reg = true_class_probability(avg, targets, temperature) > true_class_probability(teacher_lp, targets, temperature)
        return {"regularization": reg, "other": ~reg, "all": torch.ones_like(reg)}

    label = {m: plan.methods[m].label or m for m in names}
    rows = {}
    for name in names:
        d = decomps[name]
        rows[name] = {"label": label[name], "temperature": temps.get(name), "num_models": d.num_models,
                      "mean": {f: float(getattr(d, f).mean()) for f in FIELDS}, "ensemble_top1": tops[name]}
        if name != spec.reference:
            rows[name]["groups"] = _group_stats(d, ref, masks(temps[name]))
    compare = {f"{a}-{b}": {"temperature": temps[a], "groups": _group_stats(decomps[a], decomps[b], masks(temps[a]))}
               for a, b in spec.compare.items()}
    definition = DEFINITION.replace("the definition row", (
        f"row {spec.definition} (seeds {', '.join(map(str, def_seeds))}, none of them a compared model's)"
        if definer is not None else "reference row itself (biased toward a higher bias of every other row)"))
    return {"pair": spec.pair, "reference": spec.reference, "checkpoint": spec.checkpoint, "seeds": seeds,
            "definition_row": spec.definition, "definition_seeds": def_seeds,
            "num_samples": int(targets.numel()), "definition": definition,
            "units": "nats per test sample (Heskes decomposition of the cross-entropy)",
            "teacher_top1": float((teacher_lp.argmax(-1) == targets).double().mean() * 100),
            "rows": rows, "compare": compare}


def write(plan: Plan, log=None) -> Path:
    """Compute and write :func:`output_path`."""
    path = output_path(plan)
    path.write_text(json.dumps(bias_variance(plan, log), indent=1) + "\n")
    if log:
        log(f"wrote {path}")
    return path


def load(plan: Plan) -> dict | None:
    """The JSON of :func:`write`, or None when the plan has no such section or the step has not run; a file
    written for other rows than the plan's section names is returned as ``{"stale": reason}`` (the report says
    so instead of showing it)."""
    path = output_path(plan)
    spec = plan.results.bias_variance
    if spec is None or not path.is_file():
        return None
    data = json.loads(path.read_text())
    expected = list(dict.fromkeys([spec.reference, *spec.rows, *spec.compare, *spec.compare.values()]))
    found = (data.get("pair"), data.get("reference"), data.get("definition_row"), list(data.get("rows", {})))
    if found != (spec.pair, spec.reference, spec.definition, expected):
        return {"stale": f"{path} was written for pair {found[0]}, reference {found[1]}, definition {found[2]}, "
                         f"rows {found[3]}; the plan names {spec.pair}, {spec.reference}, {spec.definition}, "
                         f"{expected}: run `softlabels reproduce PLAN --bias-variance` again"}
    return data


def _delta(d: dict | None) -> str:
    if not d or d.get("mean_diff") is None:
        return "—"
    if d.get("ci_low") is None:
        return f"{d['mean_diff']:+.4f}"
    return f"{d['mean_diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"


def markdown_lines(data: dict | None) -> list[str]:
    """The report's "bias and variance on regularization samples" section (empty without data)."""
    if not data:
        return []
    if "stale" in data:
        return ["## Bias and variance on regularization samples", "", f"**Not shown:** {data['stale']}.", ""]
    ref = data["rows"][data["reference"]]
    lines = ["## Bias and variance on regularization samples", "",
             f"Pair {data['pair']}, {data['checkpoint']} checkpoints of seeds {', '.join(map(str, data['seeds']))} "
             f"per row, {data['num_samples']} test images; {data['units']}. Regularization sample: "
             f"{data['definition']}. Δ = row − {ref['label']} (the reference), mean over the group's test images "
             "with a 95 % interval over those images (the models fixed). The variance is over seeds on one "
             "training set (initialisation and batch order), not over training sets as in the paper.", "",
             "| Row | T | group | images | Δ bias | Δ variance | Δ risk |", "|---|---|---|---|---|---|---|"]
    for row in data["rows"].values():
        for group, g in (row.get("groups") or {}).items():
            delta = g.get("delta") or {}
            lines.append(f"| {row['label']} | {row['temperature']:g} | {group} | {g['count']} | "
                         f"{_delta(delta.get('bias'))} | {_delta(delta.get('variance'))} | {_delta(delta.get('risk'))} |")
    for key, comp in data.get("compare", {}).items():
        a, b = key.split("-", 1)
        for group, g in comp["groups"].items():
            delta = g.get("delta") or {}
            lines.append(f"| {data['rows'][a]['label']} − {data['rows'][b]['label']} | {comp['temperature']:g} | "
                         f"{group} | {g['count']} | {_delta(delta.get('bias'))} | {_delta(delta.get('variance'))} | "
                         f"{_delta(delta.get('risk'))} |")
    lines += ["", "| Row | models | mean bias | mean variance | mean risk | ensemble top-1 |", "|---|---|---|---|---|---|"]
    for row in data["rows"].values():
        m = row["mean"]
        lines.append(f"| {row['label']} | {row['num_models']} | {m['bias']:.4f} | {m['variance']:.4f} | "
                     f"{m['risk']:.4f} | {row['ensemble_top1']:.2f} |")
    return [*lines, ""]


def _sign(d: dict | None) -> int:
    """+1 / −1 when the 95 % interval excludes 0 on that side, 0 otherwise."""
    if not d or d.get("ci_low") is None:
        return 0
    return 1 if d["ci_low"] > 0 else -1 if d["ci_high"] < 0 else 0


def claim_lines(data: dict | None) -> list[str]:
    """Plain-language lines for the WSL summary: do soft labels raise bias and lower variance on the
    regularization samples (the paper's argument), and does WSL's weighting lower that bias."""
    if not data or "stale" in data:
        return []
    words = {1: "higher", -1: "lower", 0: "no clear change in"}
    out = []
    ref = data["rows"][data["reference"]]["label"]
    for row in data["rows"].values():
        g = (row.get("groups") or {}).get("regularization", {})
        if "delta" not in g:
            continue
        b, v = _sign(g["delta"]["bias"]), _sign(g["delta"]["variance"])
        verdict = ("as the paper argues (soft labels trade bias for variance there)" if (b, v) == (1, -1) else
                   "only half of the paper's argument (higher bias, lower variance) is seen" if b == 1 or v == -1
                   else "the paper's argument (higher bias, lower variance) is not seen")
        out.append(f"- **Regularization samples, {row['label']} vs {ref}** ({g['count']} test images at T "
                   f"{row['temperature']:g}): {words[b]} bias ({_delta(g['delta']['bias'])} nats), {words[v]} "
                   f"variance ({_delta(g['delta']['variance'])} nats): {verdict}.")
    for key, comp in data.get("compare", {}).items():
        a, b = key.split("-", 1)
        g = comp["groups"].get("regularization", {})
        if "delta" not in g:
            continue
        s = _sign(g["delta"]["bias"])
        verdict = {-1: "the weighting lowers the bias there, as WSL intends",
                   1: "the weighting raises the bias there, against WSL's intent",
                   0: "no clear effect of the weighting on that bias"}[s]
        out.append(f"- **Regularization samples, {data['rows'][a]['label']} − {data['rows'][b]['label']}**: bias "
                   f"{_delta(g['delta']['bias'])} nats, variance {_delta(g['delta']['variance'])} nats: {verdict}.")
    return out
