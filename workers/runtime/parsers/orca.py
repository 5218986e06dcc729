"""ORCA output parsers: the last energy, gradient and dipole of a normally terminated run.

Each reads the last block of its kind (an optimisation prints one per cycle; the last belongs
to the final geometry) and only after checking the text is an ORCA output that reached
'ORCA TERMINATED NORMALLY' after that block: a killed or crashed run is never a result, even
when its blocks are there. Values are in atomic units, as ORCA prints them.
"""
from __future__ import annotations

from typing import List

from ..errors import ParseError
from .scan import last_line_start, line_at, lines_from, magnitude, named, numbers, require_text

BANNER = "O   R   C   A"
TERMINATION = "ORCA TERMINATED NORMALLY"
ENERGY = "FINAL SINGLE POINT ENERGY"
GRADIENT = "CARTESIAN GRADIENT"
DIPOLE = "Total Dipole Moment"
MAGNITUDE = "Magnitude (a.u.)"


def total_energy(text: str) -> dict:
    """`energy` (Eh): the last FINAL SINGLE POINT ENERGY line."""
    line = line_at(text, _last_result(text, ENERGY, "line", "the run computed no energy"))
    return {"energy": named(numbers(line.split()[-1:], f"ORCA {ENERGY} line")[0], "Eh")}


def gradient(text: str) -> dict:
    """`gradient` (Eh/bohr, one [x, y, z] per atom): the last CARTESIAN GRADIENT block."""
    start = _last_result(text, GRADIENT, "block", "the run computed no gradient (EnGrad, Opt)")
    rows: List[List[float]] = []
    lines = lines_from(text, start)
    next(lines)  # the header itself
    for line in lines:
        tokens = line.replace(":", " ").split()
        if not rows and (not tokens or set(line.strip()) == {"-"}):
            continue  # the rule under the header and the blank line before the rows
        if len(tokens) != 5 or tokens[0] != str(len(rows) + 1):
            break
        rows.append(numbers(tokens[2:], f"ORCA {GRADIENT} row {tokens[0]}"))
    if not rows:
        raise ParseError(f"ORCA output: the last '{GRADIENT}' block has no atom rows")
    return {"gradient": named(rows, "Eh/bohr")}


def dipole(text: str) -> dict:
    """`dipole` (e·bohr, [x, y, z]) and `dipole_magnitude`: the last Total Dipole Moment."""
    start = _last_result(text, DIPOLE, "line", "the run printed no dipole moment")
    line = line_at(text, start)
    vector = numbers(line.partition(":")[2].split(), f"ORCA {DIPOLE} line")
    if len(vector) != 3:
        raise ParseError(f"ORCA output: the last '{DIPOLE}' line does not hold x, y and z")
    size = magnitude(vector)
    # ORCA prints the magnitude two lines down; prefer its own number to our recomputation.
    for _, following in zip(range(3), lines_from(text, start + len(line) + 1)):
        if following.startswith(MAGNITUDE):
            size = numbers(following.partition(":")[2].split()[:1], f"ORCA {MAGNITUDE}")[0]
            break
    return {"dipole": named(vector, "e·bohr"), "dipole_magnitude": named(size, "e·bohr")}


def _last_result(text: str, marker: str, kind: str, absent: str) -> int:
    """Start of the last line starting with `marker` in a normally terminated ORCA output.

    `kind` ("line" or "block") and `absent` (why a finished run lacks it) word the error.
    """
    require_text(text, "an ORCA output")
    if BANNER not in text:
        raise ParseError(f"not an ORCA output: no '{BANNER}' banner")
    start = last_line_start(text, marker)
    finished = text.rfind(TERMINATION)
    if start < 0 and finished < 0:
        raise ParseError(f"ORCA output has no '{marker}' {kind} and no '{TERMINATION}' line: "
                         "the run did not finish")
    if start < 0:
        raise ParseError(f"ORCA output has no '{marker}' {kind}: {absent}")
    if finished < 0:
        raise ParseError(f"ORCA output has no '{TERMINATION}' line: the run did not finish")
    if finished < start:
        raise ParseError(f"ORCA output has no '{TERMINATION}' line after its last '{marker}' "
                         f"{kind}: the last run did not finish")
    return start
