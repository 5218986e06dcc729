"""AutoDock Vina: dock the record's ligand into the receptor the arg set carries."""
from __future__ import annotations

from ..errors import InputError, ProgramNotFound
from ..execute import Parameters, TaskContext
from ..geometry import molecule_from_record, xyz_text
from ..keepfiles import check_pattern
from ..programs import find_program

LIGAND = "ligand.pdbqt"
OUTPUT = "out.pdbqt"


def dock(*, record: dict, arg_set: dict, ctx: TaskContext) -> None:
    """Write the receptor and ligand, run vina; poses go to out.pdbqt, the mode table to stdout.

    Parameters: receptor {"name": "protein.pdbqt", "content": "<pdbqt>"}, center and size
    ([x, y, z], Å), exhaustiveness (8), num_modes (9), cpu (1), seed (none: vina picks one),
    max_evals (none: vina's heuristic; a cap bounds the run time of each search).
    The ligand is the record's `ligand_pdbqt` text, or its geometry converted by Open Babel.
    """
    params = Parameters(arg_set)
    receptor = _receptor(params)
    center = params.numbers("center", 3)
    size = params.numbers("size", 3, positive=True)
    options = {"exhaustiveness": params.integer("exhaustiveness", default=8, minimum=1),
               "num_modes": params.integer("num_modes", default=9, minimum=1),
               "cpu": params.integer("cpu", default=1, minimum=1),
               "seed": params.integer("seed", default=None, minimum=None),
               "max_evals": params.integer("max_evals", default=None, minimum=1)}
    (ctx.workdir / receptor["name"]).write_text(receptor["content"])
    _write_ligand(record, ctx)
    box = [f"--{what}_{axis}={value:g}" for what, values in (("center", center), ("size", size))
           for axis, value in zip("xyz", values)]
    argv = [find_program("vina"), "--receptor", receptor["name"], "--ligand", LIGAND, *box,
            "--out", OUTPUT]
    argv += [f"--{option}={value}" for option, value in options.items() if value is not None]
    ctx.run_program(argv)


def _receptor(params: Parameters) -> dict:
    receptor = params.mapping("receptor")
    name, content = receptor.get("name"), receptor.get("content")
    if not isinstance(content, str) or not content.strip():
        raise params.fail("receptor", "must have the PDBQT text as 'content'")
    where = f"arg set {params.arg_set!r}: parameter 'receptor'"
    if not isinstance(name, str) or not name.endswith(".pdbqt") or name == LIGAND or "{" in name:
        raise params.fail("receptor", f"must have a 'name' ending in .pdbqt, not {LIGAND!r} "
                                      f"(got {name!r})")
    check_pattern(name, where=where)
    return {"name": name, "content": content}


def _write_ligand(record: dict, ctx: TaskContext) -> None:
    """ligand.pdbqt: the record's `ligand_pdbqt`, or its geometry converted with Open Babel."""
    record_id = record.get("id", "?")
    text = (record.get("input") or {}).get("ligand_pdbqt")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"record {record_id!r}: 'ligand_pdbqt' must be non-empty PDBQT text")
        (ctx.workdir / LIGAND).write_text(text)
        return
    molecule = molecule_from_record(record)
    (ctx.workdir / "ligand.xyz").write_text(xyz_text(molecule))
    try:
        obabel = find_program("obabel")
    except ProgramNotFound as exc:
        # This node lacks Open Babel; another may have it: the worker's fault, not the record's.
        raise ProgramNotFound(f"{exc}; record {record_id!r} has no 'ligand_pdbqt', so its "
                              f"geometry must be converted") from None
    ctx.run_program([obabel, "-ixyz", "ligand.xyz", "-opdbqt", "-O", LIGAND],
                    stdout_name="obabel.stdout", stderr_name="obabel.stderr")
    if not (ctx.workdir / LIGAND).is_file() or not (ctx.workdir / LIGAND).stat().st_size:
        raise InputError(f"record {record_id!r}: Open Babel made no ligand PDBQT from its geometry")

