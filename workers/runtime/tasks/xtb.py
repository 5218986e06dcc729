"""xtb: a GFN2/GFN1/GFN-FF single point, gradient or optimisation of the record's molecule."""
from __future__ import annotations

import dataclasses
import os

from ..execute import Parameters, TaskContext
from ..geometry import molecule_from_record, xyz_text
from ..programs import find_program

METHODS = {"gfn2": ["--gfn", "2"], "gfn1": ["--gfn", "1"], "gfnff": ["--gfnff"]}
TASKS = {"sp": ["--sp"], "grad": ["--grad"], "opt": ["--opt"]}
INPUT = "input.xyz"


def run(*, record: dict, arg_set: dict, ctx: TaskContext) -> None:
    """Write input.xyz and run xtb on it; xtb writes `gradient`, `xtbopt.xyz` etc. next to it.

    Parameters: method (gfn2|gfn1|gfnff, default gfn2), task (sp|grad|opt, default sp), charge
    and uhf (default: the record's charge and multiplicity - 1), flags (extra arguments),
    threads (OMP_NUM_THREADS, default 1).
    """
    params = Parameters(arg_set)
    method = params.choice("method", METHODS, default="gfn2")
    task = params.choice("task", TASKS, default="sp")
    threads = params.integer("threads", default=1, minimum=1)
    flags = params.strings("flags")
    molecule = molecule_from_record(record)
    charge = params.integer("charge", default=molecule.charge, minimum=None)
    molecule = dataclasses.replace(molecule, charge=charge)
    uhf = params.integer("uhf", default=molecule.multiplicity - 1)
    molecule.check_spin(unpaired=uhf)
    (ctx.workdir / INPUT).write_text(xyz_text(molecule))
    # On top of the program's clean environment (environment.program_environment).
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads),
           "OMP_STACKSIZE": os.environ.get("OMP_STACKSIZE", "500M")}
    argv = [find_program("xtb"), INPUT, *METHODS[method], *TASKS[task],
            "--chrg", str(charge), "--uhf", str(uhf), *flags]
    ctx.run_program(argv, env=env)
