"""Integer fields of request bodies, read as REST Proxy reads them.

Theory of operation
-------------------
Confluent REST Proxy decodes bodies with Jackson, whose default coercions turn a JSON string
of decimal digits into an ``Integer``/``Long`` field: ``{"partition": "0"}`` and
``{"fetch.min.bytes": "1"}`` are accepted there, and clients written against it send them.
So an integer field here takes a JSON integer, an integral number (``5.0`` — an integer as
JSON Schema counts it), or the decimal text of an integer in the field's range: ASCII
digits, leading zeros allowed, an optional ``+``, a ``-`` only where negative values are
allowed.  Anything else is refused (422): other strings (``" 1"``, ``"1.0"``, ``"1e3"``,
``"0x1"``), booleans, fractions, values out of range.

The OpenAPI document says exactly that — ``anyOf`` an integer with its bounds and a string
with a ``pattern`` — and the pattern *is* the decoder's test (``re.fullmatch``): it spells
the range out digit by digit (``Integer(0, 60_000)`` takes ``"60000"`` and ``"007"``, not
``"60001"``), so a string the schema allows is one the door takes, and one it refuses is one
the schema does not allow (schemathesis checks both ways).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema


def numerals_up_to(limit: int | None) -> str:
    """A regular expression (unanchored) for the decimal numerals of 0..``limit`` (None: no
    limit), leading zeros allowed: the shorter numerals, then for each non-zero digit of
    ``limit`` its prefix, a smaller digit and any digits after, then ``limit`` itself."""
    if limit is None:
        return "[0-9]+"
    digits = str(limit)
    shorter = [f"[0-9]{{1,{len(digits) - 1}}}"] if len(digits) > 1 else []
    smaller = []
    for i, digit in enumerate(digits):
        if digit != "0":
            below = "0" if digit == "1" else f"[0-{int(digit) - 1}]"
            rest = len(digits) - i - 1
            after = f"[0-9]{{{rest}}}" if rest > 1 else "[0-9]" * rest
            smaller.append(digits[:i] + below + after)
    return "0*(?:" + "|".join([*shorter, *smaller, digits]) + ")"


@dataclass(frozen=True)
class Integer:
    """``Annotated[int, Integer(ge, le)]``: a body's integer field, in ``[ge, le]`` (None: no
    bound), given as a JSON number or as decimal text (see the module docstring)."""

    ge: int | None = None
    le: int | None = None

    @property
    def pattern(self) -> str:
        """The JSON Schema ``pattern`` of the decimal texts taken (ECMA-262 and Python)."""
        alternatives = []
        if self.le is None or self.le >= 0:
            alternatives.append(r"\+?" + numerals_up_to(self.le))
        if self.ge is None or self.ge < 0:
            alternatives.append("-" + numerals_up_to(None if self.ge is None else -self.ge))
        return "^(?:" + "|".join(alternatives) + ")$"

    def range(self) -> str:
        low = "" if self.ge is None else f"from {self.ge}"
        high = "" if self.le is None else f"to {self.le}"
        return " ".join(part for part in (low, high) if part) or "of any size"

    def __get_pydantic_core_schema__(
        self, _source: Any, _handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        text = re.compile(self.pattern)

        def coerce(value: Any) -> Any:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                if text.fullmatch(value):
                    return int(value)
                raise ValueError(
                    f"expected an integer {self.range()}, as a number or as decimal text"
                )
            return value  # the strict integer check takes it or says why not

        return core_schema.no_info_before_validator_function(
            coerce, core_schema.int_schema(ge=self.ge, le=self.le, strict=True)
        )

    def __get_pydantic_json_schema__(
        self, _schema: CoreSchema, _handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        number: dict[str, Any] = {"type": "integer"}
        if self.ge is not None:
            number["minimum"] = self.ge
        if self.le is not None:
            number["maximum"] = self.le
        return {"anyOf": [number, {"type": "string", "pattern": self.pattern}]}
