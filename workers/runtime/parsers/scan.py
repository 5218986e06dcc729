"""What the output parsers share: the named-value format, text checks, line search, numbers.

Parsers scan with `str.find`/`str.rfind` and read only the lines they need, so a large output
costs little more than one pass of C-level searching.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Sequence

from ..errors import ParseError


def named(value, unit: str) -> dict:
    """One named value of a parser's result: `{"value": ..., "unit": ...}`."""
    return {"value": value, "unit": unit}


def require_text(text: str, what: str) -> None:
    """Raise ParseError when `text` is empty or binary: `what` names the output expected."""
    if not text.strip():
        raise ParseError(f"not {what}: the text is empty")
    if "\x00" in text:
        raise ParseError(f"not {what}: binary data (NUL bytes)")


def last_line_start(text: str, prefix: str, end: int = -1) -> int:
    """Index of the last line (before `end`) that starts with `prefix`; -1 if there is none."""
    pos = len(text) if end < 0 else end
    while True:
        pos = text.rfind(prefix, 0, pos)
        if pos <= 0 or text[pos - 1] == "\n":
            return pos
        # The text occurs inside a line: keep looking further up.


def line_at(text: str, pos: int) -> str:
    """The whole line holding index `pos`, without its line end."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start:] if end < 0 else text[start:end]


def lines_from(text: str, pos: int) -> Iterator[str]:
    """The lines of `text` from the one holding `pos` to the end, without line ends."""
    start = text.rfind("\n", 0, pos) + 1
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        yield text[start:end]
        start = end + 1


def number(token: str, what: str) -> float:
    """`token` as a finite float (Fortran 'D' exponents allowed); ParseError otherwise."""
    try:
        value = float(token.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise ParseError(f"{what}: {token!r} is not a number") from None
    if not math.isfinite(value):
        raise ParseError(f"{what}: {token!r} is not a finite number")
    return value


def numbers(tokens: Sequence[str], what: str) -> List[float]:
    return [number(token, what) for token in tokens]


def magnitude(vector: Sequence[float]) -> float:
    return math.sqrt(sum(component * component for component in vector))
