"""xtb output parsers: energy, gradient, dipole, quadrupole, HOMO-LUMO gap, atomic charges and
Wiberg bond orders.

xtb writes its results to several places, and each parser takes whichever of them holds its
values, told apart by content:

| kind | what | read by |
| --- | --- | --- |
| stdout | the program's stdout ('x T B' banner) | energy, dipole, homo_lumo_gap |
| `energy` | Turbomole `$energy` file | energy |
| `gradient` | Turbomole `$grad` file (`--grad`) | energy, gradient |
| `<name>.engrad` | ORCA engrad format (`--grad`) | energy, gradient |
| `xtbout.json` | `--json` | energy, dipole, homo_lumo_gap |
| `charges` | one partial charge per atom (written by every run) | charges |
| `wbo` | Wiberg bond orders, `i j order` per bond (every run) | wbo |
| `xtb.trj` | the MD trajectory: XYZ frames with 'energy:' in each comment line | trajectory |

GFN2 prints its dipole as the 'full:' row under 'molecular dipole:'; GFN1 prints it under
'dipole moment from electron density (au)' as 'X Y Z total (Debye): D'. Both are read.

xtb prints 'normal termination of xtb' to stderr, not stdout, so a stdout counts as complete
when it holds the final summary box ('| TOTAL ENERGY ... |'), the last thing a run prints
before its timings.
"""
from __future__ import annotations

import json
import re
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import ParseError
from .scan import last_line_start, lines_from, magnitude, named, number, numbers, require_text

EV_PER_EH = 27.211386245988  # CODATA 2018
BANNER = "x T B"
SUMMARY = "| TOTAL ENERGY"  # the first row of the final summary box
GFN1_DIPOLE = " dipole moment from electron density (au)"
MAX_FRAMES = 100_000
_SUMMARY_ROW = re.compile(r"\|\s*([A-Z][A-Z -]*[A-Z])\s+([-+]?[.\d]\S*)")
_GRAD_ENERGY = re.compile(r"SCF energy\s*=\s*(\S+)")

KIND_NAMES = {
    "stdout": "xtb stdout",
    "energy": "an xtb 'energy' file ($energy)",
    "gradient": "an xtb 'gradient' file ($grad)",
    "engrad": "an .engrad file",
    "json": "xtbout.json",
}

Reader = Callable[[str], dict]


def energy(text: str) -> dict:
    """`energy` (Eh) from stdout, or from the `energy`, `gradient`, .engrad or JSON file."""
    return _read(text, "xtb.energy", {
        "stdout": _stdout_energy,
        "energy": _energy_file,
        "gradient": lambda t: {"energy": _grad_file(t)["energy"]},
        "engrad": lambda t: {"energy": _engrad_file(t)["energy"]},
        "json": lambda t: _json_values(t, "total energy", _energy_values),
    })


def gradient(text: str) -> dict:
    """`energy` (Eh) and `gradient` (Eh/bohr, N×3) from the `gradient` or .engrad file."""
    return _read(text, "xtb.gradient", {"gradient": _grad_file, "engrad": _engrad_file})


def dipole(text: str) -> dict:
    """`dipole` (e·bohr, [x, y, z]) and `dipole_magnitude` from stdout or xtbout.json."""
    return _read(text, "xtb.dipole", {
        "stdout": _stdout_dipole,
        "json": lambda t: _json_values(t, "dipole", _dipole_values),
    })


def quadrupole(text: str) -> dict:
    """`quadrupole` (e·bohr², traceless, [xx, xy, yy, xz, yz, zz]) from GFN2's stdout."""
    return _read(text, "xtb.quadrupole", {"stdout": _stdout_quadrupole})


def charges(text: str) -> dict:
    """`charges` (e, one per atom in input order) from the `charges` file."""
    rows = [line.split() for line in _plain_file(text, "xtb.charges", "charges").splitlines()
            if line.strip()]
    if any(len(row) != 1 for row in rows):
        raise ParseError("xtb charges file: every line holds one number (the charges file, "
                         "not stdout)")
    return {"charges": named(numbers([row[0] for row in rows], "xtb charges file"), "e")}


def wbo(text: str) -> dict:
    """`wbo`: Wiberg bond orders as [[i, j, order], ...] (atoms counted from 1, as xtb does)
    from the `wbo` file; xtb lists only bonds with an order above 0.1."""
    bonds = []
    for line in _plain_file(text, "xtb.wbo", "wbo").splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 3 or not (tokens[0].isdigit() and tokens[1].isdigit()):
            raise ParseError(f"xtb wbo file: {line.strip()[:60]!r} is not 'i j bond-order'")
        bonds.append([int(tokens[0]), int(tokens[1]), number(tokens[2], "xtb wbo file")])
    return {"wbo": named(bonds, "1")}


def trajectory(text: str) -> dict:
    """The frames of an MD trajectory (`xtb.trj`): `elements`, `frame_energies` (Eh, one per
    frame) and `frame_coordinates` (Å, frames × atoms × 3). At most MAX_FRAMES frames are read."""
    require_text(text, "an xtb trajectory")
    lines = text.splitlines()
    elements: List[str] = []
    energies: List[float] = []
    frames: List[List[List[float]]] = []
    at = 0
    while at < len(lines) and lines[at].strip():
        count = lines[at].strip()
        if not count.isdigit() or int(count) == 0:
            raise ParseError(f"xtb trajectory line {at + 1}: {count[:30]!r} is not an atom count")
        atoms = int(count)
        if at + 2 + atoms > len(lines):
            break  # the last frame is cut off: the run was stopped while writing it
        comment = lines[at + 1].split()
        if "energy:" not in comment or comment.index("energy:") + 1 >= len(comment):
            raise ParseError(f"xtb trajectory line {at + 2}: no 'energy:' in the comment line")
        energy = number(comment[comment.index("energy:") + 1], "xtb trajectory energy")
        rows = [line.split() for line in lines[at + 2:at + 2 + atoms]]
        symbols = [row[0] if row else "" for row in rows]
        if not elements:
            elements = symbols
        elif symbols != elements:
            raise ParseError(f"xtb trajectory line {at + 3}: the atoms differ from frame 1's")
        frames.append([numbers(row[1:4], "xtb trajectory coordinates") for row in rows])
        energies.append(energy)
        if len(frames) > MAX_FRAMES:
            raise ParseError(f"xtb trajectory: more than {MAX_FRAMES:,} frames; raise 'dump'")
        at += 2 + atoms
    if not frames:
        raise ParseError("xtb trajectory has no complete frame")
    return {"elements": named(elements, ""), "frame_energies": named(energies, "Eh"),
            "frame_coordinates": named(frames, "Ang")}


def homo_lumo_gap(text: str) -> dict:
    """`homo_lumo_gap` (Eh) and `homo_lumo_gap_ev` (eV) from stdout or xtbout.json."""
    return _read(text, "xtb.homo_lumo_gap", {
        "stdout": _stdout_gap,
        "json": lambda t: _json_values(t, "HOMO-LUMO gap/eV", _gap_values),
    })


def _read(text: str, parser: str, readers: Dict[str, Reader]) -> dict:
    """Run the reader of `text`'s kind, or say which kinds `parser` reads."""
    names = [KIND_NAMES[kind] for kind in readers]
    accepted = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    kind = _kind(text)
    if kind is None:
        raise ParseError(f"not an xtb output: no '{BANNER}' banner and not a file xtb writes "
                         f"({parser} reads {accepted})")
    if kind not in readers:
        raise ParseError(f"{parser} cannot read {KIND_NAMES[kind]}: give it {accepted}")
    return readers[kind](text)


def _kind(text: str) -> Optional[str]:
    """Which of xtb's outputs `text` is (a key of KIND_NAMES), or None."""
    require_text(text, "an xtb output")
    head = text.lstrip()[:200]
    if head.startswith("$energy"):
        return "energy"
    if head.startswith("$grad"):
        return "gradient"
    if head.startswith("#") and "# Number of atoms" in head:
        return "engrad"
    if head.startswith("{"):
        return "json"
    if BANNER in text:
        return "stdout"
    return None


# stdout

def _stdout_energy(text: str) -> dict:
    return {"energy": named(_summary_value(text, "TOTAL ENERGY"), "Eh")}


def _stdout_gap(text: str) -> dict:
    return _gap_values(_summary_value(text, "HOMO-LUMO GAP"))


def _stdout_dipole(text: str) -> dict:
    _summary_value(text, "TOTAL ENERGY")  # the run finished
    start = last_line_start(text, "molecular dipole:")
    if start < 0:
        return _gfn1_dipole(text)
    # Under the header: a column-title row, 'q only:' and 'full:' (x, y, z in a.u., |μ| in D).
    for _, line in zip(range(4), lines_from(text, start)):
        label, _, values = line.partition(":")
        if label.strip() == "full":
            return _dipole_values(numbers(values.split()[:3], "xtb stdout dipole 'full:' row"))
    raise ParseError("xtb stdout: the 'molecular dipole:' block has no 'full:' row")


def _gfn1_dipole(text: str) -> dict:
    """GFN1's block: the header, an 'X Y Z' row, then 'x y z total (Debye): D' (x, y, z in a.u.)."""
    start = last_line_start(text, GFN1_DIPOLE)
    if start < 0:
        raise ParseError(f"xtb stdout has no 'molecular dipole:' block (GFN2) and no "
                         f"'{GFN1_DIPOLE.strip()}' block (GFN1)")
    for _, line in zip(range(4), lines_from(text, start)):
        values, marker, _ = line.partition("total (Debye)")
        if marker:
            return _dipole_values(numbers(values.split()[:3], "xtb stdout GFN1 dipole row"))
    raise ParseError(f"xtb stdout: the '{GFN1_DIPOLE.strip()}' block has no 'total (Debye)' row")


def _stdout_quadrupole(text: str) -> dict:
    _summary_value(text, "TOTAL ENERGY")  # the run finished
    start = last_line_start(text, "molecular quadrupole (traceless):")
    if start < 0:
        raise ParseError("xtb stdout has no 'molecular quadrupole (traceless):' block (only "
                         "GFN2 prints one)")
    for _, line in zip(range(6), lines_from(text, start)):
        label, _, values = line.partition(":")
        if label.strip() == "full":
            return {"quadrupole": named(numbers(values.split()[:6], "xtb quadrupole 'full:' row"),
                                        "e·bohr²")}
    raise ParseError("xtb stdout: the quadrupole block has no 'full:' row")


def _plain_file(text: str, parser: str, name: str) -> str:
    """`text` when it is one of xtb's plain numeric files (`charges`, `wbo`), not another output."""
    require_text(text, f"an xtb {name} file")
    kind = _kind(text)
    if kind is not None:
        raise ParseError(f"{parser} reads xtb's '{name}' file, not {KIND_NAMES[kind]}")
    return text


def _summary_value(text: str, label: str) -> float:
    """The number on row `label` of the final summary box ('| TOTAL ENERGY  -5.07 Eh |')."""
    start = text.rfind(SUMMARY)
    if start < 0:
        raise ParseError("xtb stdout has no final 'TOTAL ENERGY' summary: the run did not finish")
    rows, closed = {}, False
    for line in lines_from(text, start):
        inner = line.strip()
        closed = inner.startswith("-")  # the rule under the box's last row
        if not inner.startswith("|"):
            break
        match = _SUMMARY_ROW.match(inner)
        if match:
            rows[match.group(1)] = match.group(2)
    if not closed:
        raise ParseError("xtb stdout: the final summary box is cut off: the output is truncated")
    if label not in rows:
        raise ParseError(f"xtb stdout's final summary has no '{label}' row")
    return number(rows[label], f"xtb stdout '{label}' row")


# files

def _energy_file(text: str) -> dict:
    """The `energy` file: '$energy', one row per cycle (cycle, energy, ...), '$end'."""
    rows = _turbomole_group(text, "$energy", "energy")
    if not rows:
        raise ParseError("xtb energy file has no rows between '$energy' and '$end'")
    tokens = rows[-1].split()
    return {"energy": named(number(tokens[1] if len(tokens) > 1 else "", "xtb energy file"),
                            "Eh")}


def _grad_file(text: str) -> dict:
    """The `gradient` file: per cycle, a 'cycle =' line, N 'x y z symbol' rows, N gradients."""
    rows = _turbomole_group(text, "$grad", "gradient")
    cycles = [i for i, row in enumerate(rows) if row.lstrip().startswith("cycle")]
    if not cycles:
        raise ParseError("xtb gradient file has no 'cycle =' line")
    match = _GRAD_ENERGY.search(rows[cycles[-1]])
    value = number(match.group(1) if match else "", "xtb gradient file 'SCF energy'")
    body = [row.split() for row in rows[cycles[-1] + 1:]]
    natoms = sum(1 for tokens in body if len(tokens) == 4)
    vectors = [numbers(t, "xtb gradient file") for t in body[natoms:] if len(t) == 3]
    if natoms == 0 or len(vectors) != natoms:
        raise ParseError(f"xtb gradient file: the last cycle has {natoms} atoms but "
                         f"{len(vectors)} gradient rows")
    return {"energy": named(value, "Eh"), "gradient": named(vectors, "Eh/bohr")}


def _turbomole_group(text: str, group: str, name: str) -> List[str]:
    """The rows of the data group `group` ('$grad'), up to its '$end'."""
    rows = text.lstrip().splitlines()[1:]
    for i, row in enumerate(rows):
        if row.startswith("$"):
            return rows[:i]
    raise ParseError(f"xtb {name} file has no '$end' line after '{group}': the file is incomplete")


def _engrad_file(text: str) -> dict:
    """An .engrad file: '#' comments around N, the energy, 3N gradient values and N atoms."""
    data = [line.split() for line in text.splitlines() if line.strip() and line[:1] != "#"]
    natoms, expected_rows = _engrad_size(data)
    if len(data) < expected_rows:
        raise ParseError(f"engrad file: {len(data)} data lines, {expected_rows} expected for "
                         f"{natoms} atoms: the file is incomplete")
    flat = numbers([row[0] for row in data[2:2 + 3 * natoms]], "engrad gradient")
    vectors = [flat[i:i + 3] for i in range(0, len(flat), 3)]
    return {"energy": named(number(data[1][0], "engrad energy"), "Eh"),
            "gradient": named(vectors, "Eh/bohr")}


def _engrad_size(data: List[List[str]]) -> Tuple[int, int]:
    """(atoms, data lines expected): the count, the energy, 3N gradient values, N atom lines."""
    natoms = data[0][0] if data else ""
    if not natoms.isdigit() or int(natoms) == 0:
        raise ParseError(f"engrad file: the number of atoms {natoms!r} is not a positive count")
    return int(natoms), 2 + 4 * int(natoms)


def _json_values(text: str, key: str, values: Callable[..., dict]) -> dict:
    """`values(document[key])` for an xtbout.json document."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ParseError(f"xtbout.json is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or key not in document:
        raise ParseError(f"xtbout.json has no {key!r} entry")
    try:
        return values(document[key])
    except (TypeError, ValueError):
        raise ParseError(f"xtbout.json: {key!r} is not what xtb writes there") from None


def _energy_values(value) -> dict:
    return {"energy": named(float(value), "Eh")}


def _dipole_values(vector) -> dict:
    if len(vector) != 3:
        raise ValueError("a dipole has three components")
    vector = [float(component) for component in vector]
    return {"dipole": named(vector, "e·bohr"),
            "dipole_magnitude": named(magnitude(vector), "e·bohr")}


def _gap_values(gap_ev) -> dict:
    gap_ev = float(gap_ev)
    return {"homo_lumo_gap": named(gap_ev / EV_PER_EH, "Eh"),
            "homo_lumo_gap_ev": named(gap_ev, "eV")}
