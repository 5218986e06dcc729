"""AutoDock Vina parser: the whole modes table, from stdout or from the output PDBQT.

Stdout prints the table after a '-----+------------' rule, to four significant digits; the
output PDBQT holds one 'REMARK VINA RESULT:' line per MODEL, to three decimals, and only the
modes within `energy_range` of the best, so it can hold fewer modes than stdout.
"""
from __future__ import annotations

import re
from typing import List, Tuple

from ..errors import ParseError
from .scan import named, numbers, require_text

BANNER = "AutoDock Vina"
RESULT = "REMARK VINA RESULT:"
RULE = "-----+----"
_ROW = re.compile(r"\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")

Rows = List[Tuple[float, float, float]]  # (affinity, rmsd l.b., rmsd u.b.) per mode


def affinities(text: str) -> dict:
    """`affinities` (kcal/mol), `rmsd_lb`, `rmsd_ub` (Å), `best_affinity`, `modes` (count)."""
    require_text(text, "a Vina output")
    if RESULT in text:
        rows = _pdbqt_rows(text)
    elif BANNER in text:
        rows = _stdout_rows(text)
    else:
        raise ParseError(f"not a Vina output: no '{BANNER}' banner and no '{RESULT}' lines")
    affinity, lower, upper = (list(column) for column in zip(*rows))
    return {
        "affinities": named(affinity, "kcal/mol"),
        "rmsd_lb": named(lower, "Å"),
        "rmsd_ub": named(upper, "Å"),
        "best_affinity": named(min(affinity), "kcal/mol"),
        "modes": named(len(rows), "count"),
    }


def _stdout_rows(text: str) -> Rows:
    """The rows under the last '-----+' rule, numbered 1, 2, ... with nothing cut off."""
    rule = text.rfind("\n" + RULE)
    if rule < 0:
        raise ParseError(f"Vina stdout has no modes table (no '{RULE}' rule): "
                         "the docking did not finish")
    lines = text[rule + 1:].split("\n")[1:]
    # The last item is "" when the text ends with a line end; anything else was cut mid-line.
    complete, cut = lines[:-1], lines[-1]
    rows: Rows = []
    for line in complete:
        match = _ROW.match(line)
        if not match or match.group(1) != str(len(rows) + 1):
            break
        rows.append(tuple(numbers(match.groups()[1:], f"Vina stdout mode {len(rows) + 1}")))
    else:
        if cut.strip():
            raise ParseError(f"Vina stdout's modes table is cut off after mode {len(rows)}: "
                             "the output is truncated")
    if not rows:
        raise ParseError("Vina stdout's modes table has no rows: the output is truncated")
    return rows


def _pdbqt_rows(text: str) -> Rows:
    """One row per 'REMARK VINA RESULT:' line, checked against the MODEL/ENDMDL records."""
    rows: Rows = []
    models = ends = 0
    for line in text.splitlines():
        if line.startswith(RESULT):
            values = numbers(line[len(RESULT):].split()[:3], f"Vina PDBQT mode {len(rows) + 1}")
            if len(values) != 3:
                raise ParseError(f"Vina PDBQT: '{RESULT}' line {len(rows) + 1} has "
                                 f"{len(values)} of its 3 numbers")
            rows.append((values[0], values[1], values[2]))
        elif line.startswith("MODEL"):
            models += 1
        elif line.startswith("ENDMDL"):
            ends += 1
    if not rows:
        raise ParseError(f"Vina PDBQT has no line starting with '{RESULT}'")
    if models and not (models == ends == len(rows)):
        raise ParseError(f"Vina PDBQT has {models} MODEL, {ends} ENDMDL and {len(rows)} "
                         f"'{RESULT}' lines: the file is incomplete")
    return rows
