"""xtb molecular dynamics and metadynamics: sample conformations of the record's molecule.

xtb reads the run's settings from an xcontrol file (`md.inp` here: a `$md` block, and a
`$metadyn` block for metadynamics) and writes the trajectory to `xtb.trj`: one XYZ frame every
`dump` fs, each with its potential energy in the comment line. Parse it with
`xtb.trajectory` (parsers: {xtb.trj: [xtb.trajectory]}) and keep it compressed with
keep_files {xtb.trj: "{id}.trj"}. xtb writes no gradients along a trajectory.
"""
from __future__ import annotations

from ..execute import Parameters, TaskContext
from ..geometry import xyz_text
from ..programs import find_program
from .xtb import METHODS, charged_molecule, computed, xtb_environment

INPUT = "input.xyz"
CONTROL = "md.inp"
TRAJECTORY = "xtb.trj"
MODES = {"md": "--md", "metadyn": "--metadyn"}
# xtb's own defaults where a chemist usually keeps them (xtb documentation, "Molecular
# Dynamics"): 298.15 K, a 4 fs step with SHAKE on bonds to hydrogen and hydrogen mass 4.
DEFAULTS = {"temperature": 298.15, "time": 10.0, "step": 4.0, "dump": 50.0, "shake": 1,
            "hmass": 4}


def run(*, record: dict, arg_set: dict, ctx: TaskContext) -> None:
    """Run xtb --md (or --metadyn) on the record's molecule.

    Parameters: method (gfn2|gfn1|gfnff), mode (md|metadyn, default md), temperature (K),
    time (ps), step (fs), dump (fs between saved frames), shake (0: off, 1: bonds to H,
    2: all bonds), hmass (hydrogen mass, amu), charge, uhf, threads; for metadyn also
    kpush (Eh), alp (bohr⁻²) and save (the number of structures that push).
    """
    params = Parameters(arg_set)
    method = params.choice("method", METHODS, default="gfn2")
    mode = params.choice("mode", MODES, default="md")
    threads = params.integer("threads", default=1, minimum=1)
    settings = {
        "temp": params.number("temperature", default=DEFAULTS["temperature"], minimum=1.0,
                              maximum=10000.0),
        "time": params.number("time", default=DEFAULTS["time"], minimum=0.001,
                              maximum=100000.0),
        "step": params.number("step", default=DEFAULTS["step"], minimum=0.01, maximum=10.0),
        "dump": params.number("dump", default=DEFAULTS["dump"], minimum=0.01),
        "shake": _shake(params),
        "hmass": params.integer("hmass", default=DEFAULTS["hmass"], minimum=1),
    }
    lines = ["$md", *(f"   {key}={value}" for key, value in settings.items()),
             "   velo=false", "   nvt=true", "$end"]
    if mode == "metadyn":
        lines += ["$metadyn",
                  f"   kpush={params.number('kpush', default=0.05, minimum=0.0)}",
                  f"   alp={params.number('alp', default=1.2, minimum=0.0)}",
                  f"   save={params.integer('save', default=10, minimum=1)}",
                  "$end"]
    molecule, uhf = charged_molecule(params, record)
    (ctx.workdir / INPUT).write_text(xyz_text(molecule))
    (ctx.workdir / CONTROL).write_text("\n".join(lines) + "\n")
    argv = [find_program("xtb"), INPUT, *METHODS[method], MODES[mode], "--input", CONTROL,
            "--chrg", str(molecule.charge), "--uhf", str(uhf)]
    result = ctx.run_program(argv, env=xtb_environment(threads))
    ctx.computed.update(computed(molecule, uhf, method, result.stdout_path),
                        sampling={"mode": mode, **settings})


def _shake(params: Parameters) -> int:
    shake = params.integer("shake", default=DEFAULTS["shake"], minimum=0)
    if shake > 2:
        raise params.fail("shake", f"must be 0, 1 or 2 (got {shake})")
    return shake
