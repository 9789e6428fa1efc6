"""The base of every request body: validated with the types the OpenAPI document states.

Strict, so a value the document calls invalid is refused (no 0 for false, no "3" for 3, no true
for 1), and unknown keys are refused. One relaxation keeps JSON's own meaning: 3.0 is the integer
3 (JSON Schema counts it as one; a strict int would not).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class JsonBody(BaseModel):
    # Enum fields need Field(strict=False): strict validation wants enum instances, not their values.
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_floats(cls, value: Any) -> Any:
        # Harmless for other fields: a float field takes the int back, any other type still refuses it.
        return _integral(value)


def _integral(value: Any) -> Any:
    """3.0 -> 3, also inside lists and dicts (e.g. a dict of step counts)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value
