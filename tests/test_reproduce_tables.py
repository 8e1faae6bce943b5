"""The per-pair tables of a plan's report (reproduce/pair_tables.py): groups, the Δ column, Other rows."""
from __future__ import annotations

import pytest

from softlabels.errors import ConfigError
from softlabels.reproduce import pair_tables
from softlabels.reproduce.plan import parse_plan
from test_reproduce import v2_plan


def entry(seeds, best, values=None):
    return {"seeds": seeds, "best": best, "last": best, "missing_seeds": [], "values": values or {},
            "inherited_from": [], "selected": bool(values), "best_mean": sum(best) / len(best) if best else None,
            "best_std": None, "last_mean": sum(best) / len(best) if best else None, "last_std": None}


def pair(**methods):
    return {"teacher_model": "resnet20", "student": "resnet8", "methods": methods}


TEACHER = {"best_top1": 84.2, "last_top1": 84.21}


def test_groups_split_the_table_and_show_the_paired_difference_to_the_baseline(tmp_path):
    raw = v2_plan(tmp_path)
    raw["results"]["groups"] = [{"title": "Distillation", "rows": ["student", "kd", "wsl"], "baseline": "student",
                                 "note": "Three rows."}]
    plan = parse_plan(raw)
    p = pair(student=entry([0, 1, 2], [80.0, 81.0, 82.0]), kd=entry([0, 1, 2], [81.0, 82.5, 83.0], {"T": 4}),
             wsl=entry([0, 1], [80.5, 81.0]), kd_equal=entry([0], [79.0]))
    lines = pair_tables.rows_section(plan, p, TEACHER)
    text = "\n".join(lines)
    assert lines[0] == "### Distillation" and "Three rows." in text
    assert "| Δ best vs student [95 % CI] |" in text
    student_row = next(line for line in lines if line.startswith("| student |"))
    assert "| (reference) |" in student_row
    # kd - student per seed: +1.0, +1.5, +1.0 -> mean +1.17, t(2) interval +1.17 ± 4.303 * 0.289 / sqrt(3)
    kd_row = next(line for line in lines if line.startswith("| kd |"))
    assert "| +1.17 [+0.45, +1.88] |" in kd_row
    wsl_row = next(line for line in lines if line.startswith("| wsl |"))
    assert "| +0.25 [-2.93, +3.43] |" in wsl_row  # seeds 0 and 1 only: +0.5, +0.0
    # rows in no group come last, without a Δ column
    other = lines.index("### Other rows")
    kd_equal = plan.methods["kd_equal"].label or "kd_equal"
    assert any(line.startswith(f"| {kd_equal} |") for line in lines[other:])
    assert "Δ" not in "\n".join(lines[other:])


def test_without_groups_the_single_table_is_unchanged(tmp_path):
    plan = parse_plan(v2_plan(tmp_path))
    p = pair(student=entry([0], [80.0]), kd=entry([], []))
    lines = pair_tables.rows_section(plan, p, TEACHER)
    assert lines[0] == "| Row | best | last | seeds | hyperparameters | per-seed best |"
    assert lines[2] == "| Teacher (resnet20) | 84.20 | 84.21 | 1 | trained once | — |"
    assert lines[3] == "| student | 80.00 | 80.00 | 1 | defaults | 80.00 |"
    assert lines[4] == "| kd | — | — | 0 | defaults |  |"


def test_a_baseline_list_takes_the_first_row_on_the_pair_and_a_group_without_rows_is_left_out(tmp_path):
    raw = v2_plan(tmp_path)
    raw["results"]["groups"] = [{"title": "Empty here", "rows": ["kd_equal"]},
                                {"title": "Main", "rows": ["kd", "wsl"], "baseline": ["kd_equal", "kd"]}]
    plan = parse_plan(raw)
    lines = pair_tables.rows_section(plan, pair(kd=entry([0, 1], [81.0, 82.0]), wsl=entry([0, 1], [82.0, 82.0])),
                                     TEACHER)
    assert "### Empty here" not in lines and lines[0] == "### Main"
    assert "Δ best vs kd [95 % CI]" in lines[2]
    assert "| +0.50 [-5.85, +6.85] |" in next(line for line in lines if line.startswith("| wsl |"))


def test_group_rows_and_baselines_must_name_methods(tmp_path):
    for group, match in (({"title": "x", "rows": ["nope"]}, "results.groups: unknown method 'nope'"),
                         ({"title": "x", "rows": ["kd"], "baseline": ["kd", "zz"]},
                          "results.groups: unknown method 'zz'")):
        raw = v2_plan(tmp_path)
        raw["results"]["groups"] = [group]
        with pytest.raises(ConfigError, match=match):
            parse_plan(raw, "plan.yaml")
