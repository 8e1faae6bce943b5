"""The pydantic base of every config section (experiment, dataset configs): strict, finite, stable dumps.

A leaf module (imports nothing from softlabels), so that ``softlabels.data`` and ``softlabels.config``
can both build on it without importing each other.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer


class StrictModel(BaseModel):
    """Unknown keys are errors, assignments are validated, NaN/inf floats are refused.

    ``omit_when_default`` names fields added after run folders were first written: they are dumped only
    when they differ from their default, so the ``config.yaml`` of an older run reads back to the same
    dump (resume compares the two).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    omit_when_default: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: Any) -> Any:
        out = handler(self)
        if isinstance(out, dict):
            for key in self.omit_when_default:
                field = type(self).model_fields[key]
                if key in out and getattr(self, key) == field.get_default(call_default_factory=True):
                    del out[key]
        return out


_TYPE_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "is-instance", "lax-or-strict", "json-or-python"}


def _format_loc(loc: tuple) -> str:
    """Dotted key of a pydantic error location, without the union/validator tags pydantic inserts."""
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif not (p in _TYPE_TAGS or "[" in p or p.startswith("function-")):
            parts.append(("." if parts else "") + p)
    return "".join(parts)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_message(err: ValidationError, prefix: str = "") -> str:
    """All of a ValidationError in one line naming dotted keys (``prefix`` + location); the alternatives
    of a union are joined per key ("... or ...")."""
    keyed: dict[str, tuple[list[str], str]] = {}
    lines = []
    for e in err.errors():
        key = (prefix + _format_loc(e["loc"])).rstrip(".")
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}' (check the spelling; see docs/configs.md for the keys)")
        elif e["type"] == "missing":
            lines.append(f"missing key '{key}'")
        else:
            got = e.get("input")
            msgs, _ = keyed.setdefault(key, ([], "" if isinstance(got, (dict, list)) else f" (got {_short(got)})"))
            msg = e["msg"].removeprefix("Value error, ")
            if msg not in msgs:
                msgs.append(msg)
    for key, (msgs, got) in keyed.items():
        text = " or ".join(msgs) + got
        lines.append(f"key '{key}': {text}" if key else text)
    return "; ".join(lines)
