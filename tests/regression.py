"""Stored reference values for loss regression tests (tests/fixtures/*.json)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_reference(path: Path, values: dict[str, float]) -> None:
    """Store ``values`` (re-run only when a change of value is intended, and say so in the commit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


def assert_matches_reference(path: Path, values: dict[str, float]) -> None:
    """Every stored key is present and equal within rel 1e-5 / abs 1e-7; no key is missing or extra."""
    stored = json.loads(path.read_text())
    assert set(stored) == set(values)
    for key, value in stored.items():
        assert values[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
