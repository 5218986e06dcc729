"""ORCA: one run per arg set, the arg set's route text followed by the record's geometry."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..execute import Parameters, TaskContext
from ..geometry import molecule_from_record, orca_coordinates
from ..programs import find_program

INPUT = "orca.inp"
_VERSION = re.compile(r"Program Version (\S+)")


def sequential(*, record: dict, arg_set: dict, ctx: TaskContext) -> None:
    """Write orca.inp (route + `* xyz CHARGE MULT` block) and run `orca orca.inp`.

    ORCA's output is its stdout; it is started by its full path (ORCA_EXE or PATH), since it
    finds its helper programs next to itself.
    """
    route = Parameters(arg_set).text("route")
    molecule = molecule_from_record(record)
    molecule.check_spin()
    (ctx.workdir / INPUT).write_text(f"{route.rstrip()}\n\n{orca_coordinates(molecule)}")
    result = ctx.run_program([find_program("orca"), INPUT])
    ctx.computed.update(program="orca", version=program_version(result.stdout_path),
                        method=route_method(route), charge=molecule.charge,
                        multiplicity=molecule.multiplicity)


def route_method(route: str) -> str:
    """The route's `!` keyword lines, joined: what ORCA was asked to compute."""
    keywords = [line.strip().lstrip("!").strip() for line in route.splitlines()
                if line.strip().startswith("!")]
    return " ".join(k for k in keywords if k)


def program_version(stdout: Optional[Path]) -> str:
    """ORCA's version from its banner ('Program Version 5.0.4 - RELEASE -'), or ''."""
    try:
        with open(stdout, encoding="utf-8", errors="replace") as handle:
            head = handle.read(20000)
    except (OSError, TypeError):
        return ""
    match = _VERSION.search(head)
    return match.group(1) if match else ""
