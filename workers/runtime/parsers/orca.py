"""ORCA output parsers: the last energy, gradient, dipole, atomic charges and orbital energies
of a normally terminated run whose SCF converged.

Each reads the last block of its kind (an optimisation prints one per cycle; the last belongs
to the final geometry) and only after checking the text is an ORCA output that reached
'ORCA TERMINATED NORMALLY' after that block: a killed or crashed run is never a result, even
when its blocks are there. Nor is a run whose last SCF before that block printed 'SCF NOT
CONVERGED' (ORCA goes on after an unconverged SCF in optimisations, or with
SCFConvergenceForced off): its numbers are not the method's, so the parser fails with the
reason and the arg set fails. Values are in atomic units, as ORCA prints them.
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
SCF_CONVERGED = "SCF CONVERGED AFTER"
SCF_NOT_CONVERGED = "SCF NOT CONVERGED"
ORBITALS = "ORBITAL ENERGIES"
SPIN_UP, SPIN_DOWN = "SPIN UP ORBITALS", "SPIN DOWN ORBITALS"
EV_PER_EH = 27.211386245988  # CODATA 2018
# (result key, block header): population analyses ORCA prints by default or on request.
CHARGE_BLOCKS = (
    ("mulliken_charges", "MULLIKEN ATOMIC CHARGES"),
    ("loewdin_charges", "LOEWDIN ATOMIC CHARGES"),
    ("hirshfeld_charges", "HIRSHFELD ANALYSIS"),  # with Print[P_Hirshfeld] 1
)


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


def charges(text: str) -> dict:
    """`mulliken_charges`, `loewdin_charges` and `hirshfeld_charges` (e, one per atom in input
    order): the last block of each that the run printed (at least one)."""
    found = {}
    for key, header in CHARGE_BLOCKS:
        if last_line_start(text, header) < 0:
            continue
        start = _last_result(text, header, "block", "")
        found[key] = named(_charge_rows(text, start, header), "e")
    if not found:
        _last_result(text, CHARGE_BLOCKS[0][1], "block",
                     "the run printed no population analysis (Mulliken or Loewdin charges)")
    return found


def orbital_energies(text: str) -> dict:
    """The last ORBITAL ENERGIES block: `orbital_energies` (Eh) and `occupations`, per spin
    (`_alpha`/`_beta`) for an unrestricted run, then `homo`, `lumo` (Eh), `homo_lumo_gap` (Eh)
    and `homo_lumo_gap_ev` over both spins."""
    start = _last_result(text, ORBITALS, "block", "the run printed no orbital energies")
    spins = _orbital_tables(text, start)
    values = {}
    for suffix, (occupations, energies) in spins.items():
        values[f"orbital_energies{suffix}"] = named(energies, "Eh")
        values[f"occupations{suffix}"] = named(occupations, "electrons")
    occupied = [e for occs, energies in spins.values() for o, e in zip(occs, energies) if o > 0]
    empty = [e for occs, energies in spins.values() for o, e in zip(occs, energies) if o == 0]
    if occupied and empty:
        homo, lumo = max(occupied), min(empty)
        values.update(homo=named(homo, "Eh"), lumo=named(lumo, "Eh"),
                      homo_lumo_gap=named(lumo - homo, "Eh"),
                      homo_lumo_gap_ev=named((lumo - homo) * EV_PER_EH, "eV"))
    return values


def _charge_rows(text: str, start: int, header: str) -> List[float]:
    """Rows 'N El : q [spin]' (Mulliken, Loewdin) or 'N El q [spin]' (Hirshfeld, under its
    'ATOM CHARGE SPIN' title) under `header`, numbered from 0, up to the first other line."""
    rows: List[float] = []
    lines = lines_from(text, start)
    next(lines)
    colons = header != "HIRSHFELD ANALYSIS"
    for line in lines:
        if colons:
            label, colon, values = line.partition(":")
            tokens, values = label.split(), values.split()
        else:
            words = line.split()
            colon, tokens, values = ":", words[:2], words[2:]
        if not rows and (not colons or not line.strip() or set(line.strip()) == {"-"}) and (
                not tokens or tokens[0] != "0"):
            continue  # rules, blank lines, and Hirshfeld's density totals and column titles
        if not colon or len(tokens) != 2 or tokens[0] != str(len(rows)) or not values:
            break
        rows.append(numbers(values[:1], f"ORCA {header} row {tokens[0]}")[0])
    if not rows:
        raise ParseError(f"ORCA output: the last '{header}' block has no atom rows")
    return rows


def _orbital_tables(text: str, start: int) -> dict:
    """{"" : (occupations, energies)} or {"_alpha": ..., "_beta": ...} from the block at start."""
    tables: dict = {}
    suffix = ""
    occupations: List[float] = []
    energies: List[float] = []
    lines = lines_from(text, start)
    next(lines)
    for line in lines:
        stripped = line.strip()
        if stripped in (SPIN_UP, SPIN_DOWN):
            if energies:
                tables[suffix] = (occupations, energies)
            suffix, occupations, energies = ("_alpha" if stripped == SPIN_UP else "_beta"), [], []
            continue
        tokens = stripped.split()
        if not stripped or set(stripped) == {"-"} or tokens[:2] == ["NO", "OCC"]:
            if energies and not stripped and suffix != "_alpha":
                break  # the blank line that ends the (last) table
            continue
        if len(tokens) not in (4, 5) or tokens[0] != str(len(energies)):  # 5: with Irrep
            break
        occupation, energy = numbers(tokens[1:3], f"ORCA {ORBITALS} row {tokens[0]}")
        occupations.append(occupation)
        energies.append(energy)
    if energies:
        tables[suffix] = (occupations, energies)
    if not tables:
        raise ParseError(f"ORCA output: the last '{ORBITALS}' block has no orbital rows")
    return tables


def _scf_check(text: str, before: int) -> None:
    """ParseError when the last SCF before `before` did not converge."""
    failed = text.rfind(SCF_NOT_CONVERGED, 0, before)
    if failed >= 0 and failed > text.rfind(SCF_CONVERGED, 0, before):
        line = line_at(text, failed).strip(" *")
        raise ParseError(f"ORCA output: the SCF did not converge ({line}): its energy and "
                         "properties are not a result")


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
    _scf_check(text, start)
    return start
