"""The one writer module: atomic text/bytes/JSON writes, JSON Lines, CSV and Markdown tables.

Every file the package writes goes through here (run folders through :class:`softlabels.RunDir`),
so a kill never leaves a half-written file under its final name: writes go to a hidden
``.<name>.<pid>.tmp`` in the same folder, are flushed to disk and renamed over the target.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from softlabels.errors import UserError


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def clean_json(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (recursively), so it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (non-finite floats as null), with a trailing newline when indented."""
    text = json.dumps(clean_json(obj), indent=indent, allow_nan=False)
    return text + "\n" if indent is not None else text


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON file: indent 2, trailing newline, NaN/inf as null."""
    atomic_write_text(path, to_json(obj))


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; UserError naming the file (as ``what``) when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} {path} is damaged (not valid JSON: {exc}); re-create it or delete it") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON Lines file ([] when absent); stops at the first damaged line (a line cut by a kill:
    everything after it is untrustworthy)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(row, dict):
            break
        rows.append(row)
    return rows


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one row (non-finite floats as null) and flush it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(to_json(row, indent=None) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Rewrite a JSON Lines file atomically."""
    atomic_write_text(path, "".join(to_json(r, indent=None) + "\n" for r in rows))


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Atomic CSV of the flat scalar columns of every row (nested values such as histograms are left out),
    columns in order of first appearance."""
    keys: list[str] = []
    for row in rows:
        for k, v in row.items():
            if k not in keys and not isinstance(v, (dict, list, tuple)):
                keys.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")  # csv's own \r\n line ends
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def format_cell(value: Any) -> str:
    """A Markdown table cell: None/NaN as '–', floats with 4 significant digits, anything else str()."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any] | dict]) -> str:
    """A GitHub Markdown table (no trailing newline). A row is a sequence of cells or a dict keyed by header;
    cells go through :func:`format_cell` (pre-format numbers as strings for other precisions)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [row.get(h) for h in headers] if isinstance(row, dict) else list(row)
        if len(cells) != len(headers):
            raise ValueError(f"markdown_table: a row has {len(cells)} cells for {len(headers)} headers")
        lines.append("| " + " | ".join(format_cell(c) for c in cells) + " |")
    return "\n".join(lines)
