"""`softlabels report`: plots and the self-contained HTML page from tiny synthetic runs.

The runs (a CE teacher, KD at T=2 and WSL at T=4 distilled from it) and one report are built once and
shared by the tests of this module; the browser test renders the page in headless Chromium when it is
installed (`make browser`) and is skipped otherwise.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from softlabels.cli import main
from softlabels.report import collect, load_analysis

PLOTS = ["accuracy", "loss", "reg_fraction", "temperature", "wsl_weights", "bias_variance"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_TAG = '<img src="data:image/png;base64,'

_CACHE: dict = {}


@pytest.fixture
def runs(tiny, tiny_teacher, tmp_path_factory) -> list[Path]:
    """[teacher, kd_t2, wsl_t4] run folders (trained once per module)."""
    if "runs" not in _CACHE:
        from softlabels.config import validate_config
        from softlabels.engine import train

        root = tmp_path_factory.mktemp("report_runs")
        teacher = {"name": "resnet8", "checkpoint": str(tiny_teacher)}
        for name, method in (("kd_t2", {"name": "kd", "temperature": 2.0}),
                             ("wsl_t4", {"name": "wsl", "temperature": 4.0})):
            train(validate_config(tiny(root, name=name, method=method, teacher=teacher, epochs=2)))
        _CACHE["runs"] = [tiny_teacher.parent, root / "kd_t2", root / "wsl_t4"]
    return _CACHE["runs"]


@pytest.fixture
def report(runs, tmp_path_factory) -> Path:
    """The report folder for the three runs plus an analysis folder with a bias_variance.json."""
    if "report" not in _CACHE:
        base = tmp_path_factory.mktemp("report")
        analysis = base / "analysis"
        analysis.mkdir()
        (analysis / "bias_variance.json").write_text(json.dumps({
            "loss": "ce",
            "groups": {"teacher": {"bias": 0.2, "variance": 0.1, "risk": 0.3},
                       "kd_t2": {"bias": 0.25, "variance": 0.05, "risk": 0.3},
                       "wsl_t4": {"bias": 0.22, "variance": 0.05, "risk": 0.27}},
        }))
        (analysis / "notes.json").write_text(json.dumps({"unrelated": [1, 2, 3]}))  # ignored
        out = base / "out"
        assert main(["report", *map(str, runs), str(analysis), "--out", str(out)]) == 0
        _CACHE["report"] = out
    return _CACHE["report"]


def test_report_writes_every_plot_as_png_and_svg(report):
    for name in PLOTS:
        png, svg = report / f"{name}.png", report / f"{name}.svg"
        assert png.read_bytes()[:8] == PNG_MAGIC, png
        assert png.stat().st_size > 5000, png
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg"), svg


def test_report_html_is_self_contained_and_complete(report, runs):
    html = (report / "report.html").read_text(encoding="utf-8")
    for name in ("teacher", "kd_t2", "wsl_t4"):
        assert f"<b>{name}</b>" in html
    assert html.count(IMG_TAG) == len(PLOTS) == html.count("<img")
    for data in re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        assert base64.b64decode(data)[:8] == PNG_MAGIC
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", html)  # no protocol-relative resources either
    assert 'id="summary"' in html and 'id="per-class"' in html
    assert "regularization sample" in html and "WSL weight" in html
    # the per-class table: 4 classes, one column per distillation run, values from the last epoch
    last = json.loads((runs[2] / "metrics.jsonl").read_text().splitlines()[-1])
    table = html.split('id="per-class"', 1)[1].split("</table>", 1)[0]
    assert f"{100 * last['reg_fraction_per_class'][3]:.1f}%" in table
    assert table.count("<tr>") == 1 + 4 + 1  # header, classes, "all"
    assert "kd, T=2" in html and "wsl, T=4" in html


def test_report_of_a_folder_of_runs_goes_next_to_them(runs, capsys):
    parent = runs[1].parent  # holds kd_t2 and wsl_t4
    assert main(["report", str(parent)]) == 0
    out = parent / "report"
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<b>kd_t2</b>" in html and "<b>wsl_t4</b>" in html and "<b>teacher</b>" not in html
    assert (out / "temperature.png").is_file() and not (out / "bias_variance.png").exists()
    assert main(["report", str(parent)]) == 0  # again: the report folder is not taken for a run


def test_report_tolerates_a_ce_run_without_summary_and_escapes_text(runs, tmp_path):
    run = tmp_path / "odd"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("*.pt"))
    (run / "summary.json").unlink()
    cfg = (run / "config.yaml").read_text().replace("name: teacher", "name: <b>x</b> & y", 1)
    (run / "config.yaml").write_text(cfg)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "test_to')  # a torn last line
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<b>x</b>" not in html
    assert "no summary.json" in html and "skipped 1 line" in html
    assert "no run has reg_fraction" in html
    made = sorted(p.stem for p in out.glob("*.png"))
    assert made == ["accuracy", "loss"] and html.count(IMG_TAG) == 2
    assert not (out / "reg_fraction.svg").exists() and 'id="per-class"' not in html


@pytest.mark.parametrize("setup, message", [
    (None, "no such folder"),
    ("empty", "not a run folder"),
    ("config", "no metrics"),
    ("metrics", "no metrics"),
    ("file", "not a folder"),
])
def test_report_names_the_path_when_it_is_not_a_run(tmp_path, capsys, setup, message):
    path = tmp_path / "thing"
    if setup == "file":
        path.write_text("x")
    elif setup is not None:
        path.mkdir()
        if setup == "config":
            (path / "config.yaml").write_text("name: x\n")
        if setup == "metrics":
            (path / "metrics.jsonl").write_text("\n")
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err, err


def test_report_refuses_to_write_into_a_run_folder(runs, capsys):
    assert main(["report", str(runs[1]), "--out", str(runs[2])]) == 2
    assert "is a run folder" in capsys.readouterr().err


@pytest.mark.parametrize("data, labels", [
    ({"bias": 1.0, "variance": 2.0, "risk": 3.0}, ["all"]),
    ([{"name": "kd", "bias": 1, "variance": 2}, {"name": "wsl", "bias": 1, "risk": 2}], ["kd", "wsl"]),
    ({"groups": {"a": {"bias": {"mean": 0.1, "std": 0.0}, "variance": 0.2}, "b": {"risk": 0.3}}}, ["a", "b"]),
    ({"results": [{"group": "g1", "bias": 0.5, "extra": "x"}], "config": {"bias": "n/a"}}, ["g1"]),
    ({"bias": None, "nothing": [1, 2]}, None),
])
def test_analysis_json_of_any_shape(tmp_path, data, labels):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    src = load_analysis(path)
    assert (None if src is None else [e.label for e in src.entries]) == labels


def test_collect_labels_runs_with_the_same_name_apart(runs, tmp_path):
    copy = tmp_path / "other" / "kd_t2"
    shutil.copytree(runs[1], copy, ignore=shutil.ignore_patterns("*.pt"))
    found, _ = collect([runs[1], copy, runs[1]])
    assert [r.label for r in found] == [f"{runs[1].parent.name}/kd_t2", "other/kd_t2"]
    assert found[0].temperature == 2.0 and found[0].has_regularization


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    url = (report / "report.html").resolve().as_uri()
    done = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    m = re.search(r'<body[^>]*data-images-loaded="(\d+)"[^>]*data-images-total="(\d+)"', done.stdout)
    assert m, f"no image count in the rendered page (exit {done.returncode}): {done.stderr[-2000:]}"
    assert int(m.group(1)) == int(m.group(2)) == len(PLOTS), m.group(0)

    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--hide-scrollbars", "--window-size=1400,3000", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 50_000
