"""ORCA: one run per arg set, the arg set's route text followed by the record's geometry."""
from __future__ import annotations

from ..execute import Parameters, TaskContext
from ..geometry import molecule_from_record, orca_coordinates
from ..programs import find_program

INPUT = "orca.inp"


def sequential(*, record: dict, arg_set: dict, ctx: TaskContext) -> None:
    """Write orca.inp (route + `* xyz CHARGE MULT` block) and run `orca orca.inp`.

    ORCA's output is its stdout; it is started by its full path (ORCA_EXE or PATH), since it
    finds its helper programs next to itself.
    """
    route = Parameters(arg_set).text("route")
    molecule = molecule_from_record(record)
    molecule.check_spin()
    (ctx.workdir / INPUT).write_text(f"{route.rstrip()}\n\n{orca_coordinates(molecule)}")
    ctx.run_program([find_program("orca"), INPUT])
