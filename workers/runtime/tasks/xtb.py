"""xtb: a GFN2/GFN1/GFN-FF single point, gradient or optimisation of the record's molecule."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import List, Optional

from ..execute import Parameters, TaskContext
from ..geometry import Molecule, molecule_from_record, xyz_text
from ..programs import find_program

METHODS = {"gfn2": ["--gfn", "2"], "gfn1": ["--gfn", "1"], "gfnff": ["--gfnff"]}
METHOD_NAMES = {"gfn2": "GFN2-xTB", "gfn1": "GFN1-xTB", "gfnff": "GFN-FF"}
TASKS = {"sp": ["--sp"], "grad": ["--grad"], "opt": ["--opt"]}
INPUT = "input.xyz"
OPTIMISED = "xtbopt.xyz"
_VERSION = re.compile(r"xtb version (\S+)")


def run(*, record: dict, arg_set: dict, ctx: TaskContext) -> None:
    """Write input.xyz and run xtb on it; xtb writes `gradient`, `xtbopt.xyz` etc. next to it.

    Parameters: method (gfn2|gfn1|gfnff, default gfn2), task (sp|grad|opt, default sp), gradient
    (true: also --grad, for an opt: the gradient at the optimised geometry), charge and uhf
    (default: the record's charge and multiplicity - 1), flags (extra arguments), threads
    (OMP_NUM_THREADS, default 1). What was computed (charge, multiplicity, the optimised
    geometry of an opt, program version, method) goes to `ctx.computed`.
    """
    params = Parameters(arg_set)
    method = params.choice("method", METHODS, default="gfn2")
    task = params.choice("task", TASKS, default="sp")
    gradient = params.boolean("gradient", default=False)
    threads = params.integer("threads", default=1, minimum=1)
    flags = params.strings("flags")
    molecule, uhf = charged_molecule(params, record)
    (ctx.workdir / INPUT).write_text(xyz_text(molecule))
    extra = ["--grad"] if gradient and task != "grad" and "--grad" not in flags else []
    argv = [find_program("xtb"), INPUT, *METHODS[method], *TASKS[task], *extra,
            "--chrg", str(molecule.charge), "--uhf", str(uhf), *flags]
    result = ctx.run_program(argv, env=xtb_environment(threads))
    ctx.computed.update(computed(molecule, uhf, method, result.stdout_path))
    if task == "opt":
        final = read_xyz_coordinates(ctx.workdir / OPTIMISED, len(molecule.elements))
        if final is not None:
            ctx.computed["coordinates"] = final


def charged_molecule(params: Parameters, record: dict):
    """(the record's molecule with the arg set's charge, the number of unpaired electrons)."""
    molecule = molecule_from_record(record)
    charge = params.integer("charge", default=molecule.charge, minimum=None)
    molecule = dataclasses.replace(molecule, charge=charge)
    uhf = params.integer("uhf", default=molecule.multiplicity - 1)
    molecule.check_spin(unpaired=uhf)
    return molecule, uhf


def xtb_environment(threads: int) -> dict:
    """What xtb gets on top of a program's clean environment (environment.program_environment)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "OMP_STACKSIZE": os.environ.get("OMP_STACKSIZE", "500M")}


def computed(molecule: Molecule, uhf: int, method: str, stdout: Optional[Path]) -> dict:
    return {"program": "xtb", "version": program_version(stdout), "method": METHOD_NAMES[method],
            "charge": molecule.charge, "multiplicity": uhf + 1}


def program_version(stdout: Optional[Path]) -> str:
    """xtb's version from its banner ('* xtb version 6.5.1 (...)'), or '' if not printed."""
    try:
        with open(stdout, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except (OSError, TypeError):
        return ""
    match = _VERSION.search(head)
    return match.group(1) if match else ""


def read_xyz_coordinates(path: Path, atoms: int) -> Optional[List[List[float]]]:
    """The coordinates (Å) of a one-frame XYZ file of `atoms` atoms; None if it is not one."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    rows = [line.split() for line in lines[2:2 + atoms]]
    try:
        coordinates = [[float(x) for x in row[1:4]] for row in rows]
    except ValueError:
        return None
    if len(coordinates) != atoms or any(len(row) != 3 for row in coordinates):
        return None
    return coordinates
