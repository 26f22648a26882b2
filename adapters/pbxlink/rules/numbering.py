"""Inquiry number templates (A2): `{C}` counter, `{C:3}` zero-padded, `{D}` `{M}` `{Y}`, literals.

RemOnline: "{C:3} — a counter of three characters, filled with "0" on the left: 001, 002, 003".
Day and month are two digits, the year four; the date is the day the inquiry is created,
in the CRM's time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_TOKEN = re.compile(r"\{([^{}]*)\}")


class NumberTemplateError(ValueError):
    """A template with an unknown variable or a bad counter width."""


@dataclass(frozen=True, slots=True)
class _Literal:
    text: str


@dataclass(frozen=True, slots=True)
class _Counter:
    width: int


@dataclass(frozen=True, slots=True)
class _DatePart:
    part: str


_Part = _Literal | _Counter | _DatePart


def parse_template(template: str) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    position = 0
    for match in _TOKEN.finditer(template):
        if match.start() > position:
            parts.append(_Literal(template[position : match.start()]))
        name = match.group(1)
        if name == "C":
            parts.append(_Counter(0))
        elif name.startswith("C:"):
            width = name[2:]
            if not width.isdigit() or not 1 <= int(width) <= 12:
                raise NumberTemplateError(f"counter width in {{{name}}} must be 1..12")
            parts.append(_Counter(int(width)))
        elif name in {"D", "M", "Y"}:
            parts.append(_DatePart(name))
        else:
            raise NumberTemplateError(f"unknown variable {{{name}}} (use C, C:n, D, M, Y)")
        position = match.end()
    if position < len(template):
        parts.append(_Literal(template[position:]))
    if "{" in "".join(p.text for p in parts if isinstance(p, _Literal)) or "}" in "".join(
        p.text for p in parts if isinstance(p, _Literal)
    ):
        raise NumberTemplateError("unbalanced braces")
    return tuple(parts)


def render_number(template: str, counter: int, day: date) -> str:
    """The number of the inquiry that takes `counter`, created on `day`."""
    out: list[str] = []
    for part in parse_template(template):
        if isinstance(part, _Literal):
            out.append(part.text)
        elif isinstance(part, _Counter):
            out.append(str(counter).zfill(part.width))
        elif part.part == "D":
            out.append(f"{day.day:02d}")
        elif part.part == "M":
            out.append(f"{day.month:02d}")
        else:
            out.append(f"{day.year:04d}")
    return "".join(out)
