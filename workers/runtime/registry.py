"""The allowlists of task functions and output parsers.

A name that reaches a worker (from the admin, the API, a job definition file or a Redis job)
is looked up here and nowhere else: nothing is ever imported from a user-supplied dotted path.
Entries name their implementation as "module:function" inside workers.runtime and are imported
on first use, so the control plane can list names and descriptions without loading task code.
The original HTRQ system's names are aliases of htportal's own.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple


class UnknownNameError(LookupError):
    """A task function or parser name that is not in the registry."""

    def __init__(self, kind: str, name: str, known: List[str]):
        self.kind = kind
        self.name = name
        self.known = known
        super().__init__(f"unknown {kind} {name!r} (known: {', '.join(known)})")


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:function", relative to workers.runtime
    description: str
    aliases: Tuple[str, ...] = ()
    programs: Tuple[str, ...] = ()  # the programs a task always runs (a worker's --needs)

    def load(self) -> Callable:
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(f"{__package__}.{module_name}")
        return getattr(module, attr)


TASKS: Tuple[Entry, ...] = (
    Entry("orca.sequential", "tasks.orca:sequential",
          "ORCA: one run per arg set, in order (route text + the record's geometry)",
          ("htrq.htrun.scripts.orca.sequential",), programs=("orca",)),
    Entry("xtb.run", "tasks.xtb:run",
          "xtb: GFN2/GFN1/GFN-FF single point, gradient or optimisation", programs=("xtb",)),
    Entry("xtb.md", "tasks.xtb_md:run",
          "xtb: molecular dynamics or metadynamics; the trajectory in xtb.trj",
          programs=("xtb",)),
    # Open Babel only converts a record without ligand_pdbqt: not a need of every vina.dock.
    Entry("vina.dock", "tasks.vina:dock",
          "AutoDock Vina: dock the record's ligand into the arg set's receptor",
          programs=("vina",)),
    Entry("noop", "tasks.basic:noop", "does nothing; for benchmarks and tests"),
    Entry("sleep", "tasks.basic:sleep", "sleeps for the arg set's 'seconds'; for tests"),
)

PARSERS: Tuple[Entry, ...] = (
    Entry("orca.total_energy", "parsers.orca:total_energy",
          "ORCA: last FINAL SINGLE POINT ENERGY (Eh)",
          ("htrq.htrun.parser.orca.total_energy",)),
    Entry("orca.gradient", "parsers.orca:gradient",
          "ORCA: last CARTESIAN GRADIENT block (Eh/bohr)",
          ("htrq.htrun.parser.orca.gradient",)),
    Entry("orca.dipole", "parsers.orca:dipole",
          "ORCA: last Total Dipole Moment (e·bohr)",
          ("htrq.htrun.parser.orca.dipole",)),
    Entry("orca.charges", "parsers.orca:charges",
          "ORCA: last Mulliken and Loewdin atomic charges (e)"),
    Entry("orca.orbital_energies", "parsers.orca:orbital_energies",
          "ORCA: last orbital energies and occupations, HOMO, LUMO and gap (Eh)"),
    Entry("xtb.energy", "parsers.xtb:energy", "xtb stdout: TOTAL ENERGY (Eh)"),
    Entry("xtb.gradient", "parsers.xtb:gradient",
          "xtb 'gradient' file (Turbomole $grad): energy and gradient (Eh/bohr)"),
    Entry("xtb.dipole", "parsers.xtb:dipole",
          "xtb stdout: molecular dipole, GFN2 or GFN1 (e·bohr)"),
    Entry("xtb.quadrupole", "parsers.xtb:quadrupole",
          "xtb stdout: traceless quadrupole, full (GFN2; e·bohr²)"),
    Entry("xtb.homo_lumo_gap", "parsers.xtb:homo_lumo_gap", "xtb stdout: HOMO-LUMO gap"),
    Entry("xtb.charges", "parsers.xtb:charges", "xtb 'charges' file: atomic partial charges (e)"),
    Entry("xtb.wbo", "parsers.xtb:wbo", "xtb 'wbo' file: Wiberg bond orders"),
    Entry("xtb.trajectory", "parsers.xtb:trajectory",
          "xtb 'xtb.trj': MD frames with their energies (Eh) and coordinates (Å)"),
    Entry("vina.affinities", "parsers.vina:affinities",
          "AutoDock Vina: the whole modes table (kcal/mol, RMSD in Å)"),
)


def _index(entries: Tuple[Entry, ...]) -> Dict[str, Entry]:
    index: Dict[str, Entry] = {}
    for entry in entries:
        for name in (entry.name, *entry.aliases):
            index[name] = entry
    return index


_TASKS_BY_NAME = _index(TASKS)
_PARSERS_BY_NAME = _index(PARSERS)


def task_names() -> List[str]:
    """htportal's own task names, in registry order (aliases left out)."""
    return [entry.name for entry in TASKS]


def parser_names() -> List[str]:
    """htportal's own parser names, in registry order (aliases left out)."""
    return [entry.name for entry in PARSERS]


def task_entry(name: str) -> Entry:
    """The task entry for `name` or one of its aliases; UnknownNameError otherwise."""
    try:
        return _TASKS_BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownNameError("function", str(name), task_names()) from None


def parser_entry(name: str) -> Entry:
    """The parser entry for `name` or one of its aliases; UnknownNameError otherwise."""
    try:
        return _PARSERS_BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownNameError("parser", str(name), parser_names()) from None


def task_choices() -> List[Tuple[str, str]]:
    """(name, "name — description") pairs for forms and the admin."""
    return [(e.name, f"{e.name} — {e.description}") for e in TASKS]


def parser_choices() -> List[Tuple[str, str]]:
    return [(e.name, f"{e.name} — {e.description}") for e in PARSERS]


def load_task(name: str) -> Callable:
    return task_entry(name).load()


def load_parser(name: str) -> Callable:
    return parser_entry(name).load()


def canonical_task_name(name: str) -> str:
    return task_entry(name).name


def canonical_parser_name(name: str) -> Optional[str]:
    return parser_entry(name).name
