"""`softlabels report`: grouped figures, typed analysis results and the self-contained HTML page.

The runs (a CE teacher, KD at T=2 with seeds 0 and 1, KD at T=4 and WSL at T=4, distilled from it) and
one report are built once and shared by the tests of this module; the browser test renders the page in
headless Chromium at 1280 px when it is installed (`make browser`) and is skipped otherwise.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from softlabels.cli import main
from softlabels.report import collect, load_analysis

ROOT = Path(__file__).resolve().parents[1]
DOC_RESULTS = ["soft_label_bv.json", "temperature_sweep.json"]  # committed analysis results (docs/analysis)
RUN_PLOTS = ["accuracy", "loss", "reg_fraction", "temperature", "wsl_weights"]
PLOTS = RUN_PLOTS + ["analysis_soft_label_bv", "analysis_temperature_sweep"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_TAG = '<img src="data:image/png;base64,'

_CACHE: dict = {}


@pytest.fixture
def runs(tiny, tiny_teacher, tmp_path_factory) -> list[Path]:
    """[teacher, kd_t2 (seed 0), kd_t2_s1 (seed 1), kd_t4, wsl_t4] run folders (trained once per module)."""
    if "runs" not in _CACHE:
        from softlabels.config import validate_config
        from softlabels.engine import train

        root = tmp_path_factory.mktemp("report_runs")
        teacher = {"name": "resnet8", "checkpoint": str(tiny_teacher)}
        for name, method, seed in (("kd_t2", {"name": "kd", "temperature": 2.0}, 0),
                                   ("kd_t2_s1", {"name": "kd", "temperature": 2.0}, 1),
                                   ("kd_t4", {"name": "kd", "temperature": 4.0}, 0),
                                   ("wsl_t4", {"name": "wsl", "temperature": 4.0}, 0)):
            train(validate_config(tiny(root, name=name, method=method, teacher=teacher, epochs=2, seed=seed)))
        _CACHE["runs"] = [tiny_teacher.parent] + [root / n for n in ("kd_t2", "kd_t2_s1", "kd_t4", "wsl_t4")]
    return _CACHE["runs"]


@pytest.fixture
def report(runs, tmp_path_factory) -> Path:
    """The report folder for the runs plus an analysis folder holding two committed analysis results."""
    if "report" not in _CACHE:
        base = tmp_path_factory.mktemp("report")
        analysis = base / "analysis"
        analysis.mkdir()
        for name in DOC_RESULTS:
            shutil.copy(ROOT / "docs" / "analysis" / name, analysis / name)
        (analysis / "notes.json").write_text(json.dumps({"unrelated": [1, 2, 3]}))  # not a result: ignored
        out = base / "out"
        assert main(["report", *map(str, runs), str(analysis), "--out", str(out)]) == 0
        _CACHE["report"] = out
    return _CACHE["report"]


def _png_size_and_dpi(path: Path) -> tuple[int, int, float | None]:
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    i = data.find(b"pHYs")
    dpi = None
    if i > 0:
        ppu_x, _, unit = struct.unpack(">IIB", data[i + 4:i + 13])
        dpi = ppu_x * 0.0254 if unit == 1 else None
    return width, height, dpi


def test_report_writes_every_plot_as_png_at_150_dpi_and_svg(report):
    for name in PLOTS:
        png, svg = report / f"{name}.png", report / f"{name}.svg"
        assert png.read_bytes()[:8] == PNG_MAGIC, png
        width, _, dpi = _png_size_and_dpi(png)
        assert dpi is not None and round(dpi) >= 150, (png, dpi)
        assert width >= 1000, (png, width)  # not a thumbnail: ~7 inches at 150 dpi
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg"), svg


def test_seeds_of_one_configuration_are_one_group_with_n(runs, report):
    html = (report / "report.html").read_text(encoding="utf-8")
    table = html.split('id="summary"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert len(rows) == 4  # teacher, kd T=2 (2 seeds), kd T=4, wsl T=4
    kd2 = next(r for r in rows if "kd (T=2)" in r)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", kd2)
    assert cells[2] == "2" and cells[3] == "0, 1"  # n and seeds
    best = [json.loads((runs[i] / "summary.json").read_text())["best_top1"] for i in (1, 2)]
    mean = sum(best) / 2
    assert f"{mean:.2f} ± " in cells[4]  # mean ± std over the two seeds
    assert "wsl (T=4)" in html and "ce (no teacher)" in html  # legends name the method and its key setting
    details = html.split('id="runs"', 1)[1].split("</table>", 1)[0]
    assert details.count("<tr>") == 1 + 5


def test_best_epoch_chosen_on_the_test_set_is_said_plainly(report):
    html = (report / "report.html").read_text(encoding="utf-8")
    assert "Best epoch chosen on the test set" in html and "All runs had no validation split" in html
    assert "test set †" in html  # per-run detail says where each best epoch was chosen


def test_report_html_is_self_contained_and_complete(report, runs):
    html = (report / "report.html").read_text(encoding="utf-8")
    assert html.count(IMG_TAG) == len(PLOTS) == html.count("<img")
    for data in re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        assert base64.b64decode(data)[:8] == PNG_MAGIC
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", html)  # no protocol-relative resources either
    assert 'id="summary"' in html and 'id="per-class"' in html
    assert "regularization sample" in html and "WSL weight" in html
    # per-class table: one row per distillation configuration, 4 class columns, last-epoch values (mean over seeds)
    last = json.loads((runs[4] / "metrics.jsonl").read_text().splitlines()[-1])
    table = html.split('id="per-class"', 1)[1].split("</table>", 1)[0]
    assert f">{100 * last['reg_fraction_per_class'][3]:.1f}<" in table
    assert table.count("<tr>") == 1 + 3 and table.count("<th>") == 4
    # the committed analysis results are drawn with their own figures and tables, with units
    assert "Soft labels: bias and variance" in html and "Temperature sweep" in html
    assert "Bias (nats)" in html and "not enough points" not in html  # four temperatures: enough
    assert "No error bars" in html  # the committed files predate the standard errors: said, not hidden


def test_class_names_when_the_dataset_has_them():
    from softlabels.report.tables import class_names

    assert class_names("fashion_mnist", 10)[0] == "T-shirt/top" and class_names("fashion_mnist", 10)[9] == "Ankle boot"
    assert class_names("synthetic", 3) == ["0", "1", "2"]


def test_one_epoch_single_run_draws_points_on_a_sensible_axis(tiny, tmp_path):
    from softlabels.config import validate_config
    from softlabels.engine import train
    from softlabels.report.groups import group_runs
    from softlabels.report.loaders import load_run
    from softlabels.report.plots import accuracy_figure, loss_figure

    train(validate_config(tiny(tmp_path, name="one", epochs=1)))
    groups = group_runs([load_run(tmp_path / "one")])
    groups[0].color = "tab:blue"
    for fig in (accuracy_figure(groups), loss_figure(groups)):
        for ax in [a for a in fig.axes if a.get_visible() and a.lines]:
            assert ax.get_xlim() == (0.5, 1.5) and [t for t in ax.get_xticks()] == [1]
            assert all(line.get_marker() == "o" for line in ax.lines if line.get_xdata().size)  # a visible point
    assert main(["report", str(tmp_path / "one"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "accuracy.png").is_file() and (tmp_path / "out" / "loss.png").is_file()


def test_report_of_a_folder_of_runs_goes_next_to_them(runs, capsys):
    parent = runs[1].parent  # holds the kd and wsl runs
    assert main(["report", str(parent)]) == 0
    out = parent / "report"
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "kd (T=2)" in html and "wsl" in html and "ce (no teacher)" not in html
    assert (out / "temperature.png").is_file() and not list(out.glob("analysis_*.png"))
    assert main(["report", str(parent)]) == 0  # again: the report folder is not taken for a run


def test_report_tolerates_a_ce_run_without_summary_and_escapes_text(runs, tmp_path):
    run = tmp_path / "odd"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("*.pt", "*.lock"))
    (run / "summary.json").unlink()
    cfg = (run / "config.yaml").read_text().replace("name: teacher", "name: <b>x</b> & y", 1)
    (run / "config.yaml").write_text(cfg)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "test_to')  # a torn last line
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<b>x</b>" not in html
    assert "no summary.json" in html and "stopped at a damaged line" in html
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
    ("json", "not an analysis result"),
])
def test_report_names_the_path_when_it_is_not_a_run(tmp_path, capsys, setup, message):
    path = tmp_path / ("thing.json" if setup == "json" else "thing")
    if setup == "file":
        path.write_text("x")
    elif setup == "json":
        path.write_text(json.dumps({"bias": 1.0}))  # bias-looking numbers are not guessed at
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
    assert main(["report", str(runs[1]), "--out", str(runs[3])]) == 2
    assert "is a run folder" in capsys.readouterr().err


def test_analysis_results_are_read_typed(tmp_path):
    from softlabels.analysis.results import FilteringResult, SoftLabelBVResult

    src = load_analysis(ROOT / "docs" / "analysis" / "soft_label_bv.json")
    assert isinstance(src.result, SoftLabelBVResult) and [m.name for m in src.result.methods] == ["ce", "kd", "wsl"]
    assert isinstance(load_analysis(ROOT / "docs" / "analysis" / "filtering.json").result, FilteringResult)
    other = tmp_path / "a.json"
    other.write_text(json.dumps({"groups": {"a": {"bias": 0.1, "variance": 0.2}}}))
    assert load_analysis(other) is None  # no key-name guessing


def test_collect_labels_runs_with_the_same_name_apart(runs, tmp_path):
    copy = tmp_path / "other" / "kd_t2"
    shutil.copytree(runs[1], copy, ignore=shutil.ignore_patterns("*.pt", "*.lock"))
    found, _ = collect([runs[1], copy, runs[1]])
    assert [r.label for r in found] == [f"{runs[1].parent.name}/kd_t2", "other/kd_t2"]
    assert found[0].temperature == 2.0 and found[0].has_regularization


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_report_renders_in_headless_chromium_at_1280_px(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed: make browser")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=5000", "--window-size=1280,900", "--enable-logging=stderr", "--v=0"]
    url = (report / "report.html").resolve().as_uri()
    done = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body, f"no page rendered (exit {done.returncode}): {done.stderr[-2000:]}"
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(0)))
    assert int(attrs["images-loaded"]) == int(attrs["images-total"]) == len(PLOTS), attrs
    assert int(attrs["scroll-width"]) <= int(attrs["client-width"]) <= 1280, attrs  # no horizontal overflow
    assert attrs["errors"] == "0", attrs["error-text"]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line and "report.html" in line]
    assert not console, console

    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1280,3000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 50_000


def test_group_labels_name_the_method_and_what_differs(tmp_path):
    from softlabels.report.groups import group_runs
    from softlabels.report.loaders import Run

    def run(name, method, seed, **student):
        config = {"name": name, "seed": seed, "output_dir": "x", "student": {"name": "resnet8", **student},
                  "method": method, "teacher": {"name": "resnet20", "checkpoint": f"{name}.pt"} if method["name"] != "ce"
                  else None}
        return Run(tmp_path / name, name, method["name"], "resnet8", config["teacher"] and "resnet20",
                   method.get("temperature"), {}, config, [{"epoch": 1, "test_top1": 50.0}])

    infodrop = {"infodrop": {"drop_rate": 1.5, "radius": 3, "after": ["stem"]}}
    groups = group_runs([run("a", {"name": "kd", "temperature": 2}, 0), run("b", {"name": "kd", "temperature": 2}, 1),
                         run("c", {"name": "kd", "temperature": 4}, 0), run("d", {"name": "ce"}, 0),
                         run("e", {"name": "ce"}, 0, **infodrop)])
    assert [(g.label, g.n) for g in groups] == [("kd (T=2)", 2), ("kd (T=4)", 1), ("ce (no teacher)", 1),
                                                ("ce (no teacher) (infodrop)", 1)]


def test_a_run_without_summary_reads_best_and_last_from_its_rows_in_every_test_eval_mode():
    """Run.stat falls back to metrics rows: with test_eval at_end the best epoch's row has no test metrics and
    its weights' test top-1 is on the last row as best_test_top1."""
    from softlabels.report.loaders import Run

    def run(rows):
        return Run(Path("r"), "r", "ce", "resnet8", None, None, {}, {}, rows)

    at_end = run([{"epoch": 1, "val_top1": 50.0}, {"epoch": 2, "val_top1": 70.0},
                  {"epoch": 3, "val_top1": 60.0, "test_top1": 58.0, "best_test_top1": 67.0}])
    assert (at_end.stat("best_top1"), at_end.stat("best_epoch"), at_end.stat("last_top1")) == (67.0, 2, 58.0)
    every = run([{"epoch": 1, "val_top1": 50.0, "test_top1": 49.0}, {"epoch": 2, "val_top1": 70.0, "test_top1": 66.0},
                 {"epoch": 3, "val_top1": 60.0, "test_top1": 58.0}])
    assert (every.stat("best_top1"), every.stat("best_epoch"), every.stat("last_top1")) == (66.0, 2, 58.0)
