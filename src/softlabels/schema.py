"""The pydantic base of every config section (experiment, dataset configs): strict, finite, stable dumps.

A leaf module (imports nothing from softlabels), so that ``softlabels.data`` and ``softlabels.config``
can both build on it without importing each other.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer


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
