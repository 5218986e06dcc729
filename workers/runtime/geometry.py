"""A record's molecule, checked, and written as XYZ or as an ORCA coordinate block."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

from . import errors

SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd "
    "Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am "
    "Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
ATOMIC_NUMBERS = {symbol: number for number, symbol in enumerate(SYMBOLS, start=1)}


@dataclass(frozen=True)
class Molecule:
    record_id: str
    elements: Tuple[str, ...]
    coordinates: Tuple[Tuple[float, float, float], ...]  # Å
    charge: int
    multiplicity: int

    @property
    def electrons(self) -> int:
        return sum(ATOMIC_NUMBERS[e] for e in self.elements) - self.charge

    def check_spin(self, *, unpaired: Optional[int] = None) -> None:
        """InputError unless `unpaired` (default multiplicity - 1) fits the electron count."""
        unpaired = self.multiplicity - 1 if unpaired is None else unpaired
        if unpaired > self.electrons or (self.electrons - unpaired) % 2:
            raise errors.InputError(
                f"record {self.record_id!r}: multiplicity {unpaired + 1} ({unpaired} unpaired) "
                f"is impossible with {self.electrons} electrons (charge {self.charge})"
            )


def molecule_from_record(record: Mapping) -> Molecule:
    """The record's input as a Molecule; InputError naming the record and the problem."""
    record_id = str(record.get("id", "?"))
    data = record.get("input")
    where = f"record {record_id!r}"
    if not isinstance(data, Mapping):
        raise errors.InputError(f"{where}: no 'input' object")
    for field in ("elements", "coordinates"):
        if not isinstance(data.get(field), list) or not data[field]:
            raise errors.InputError(f"{where}: input has no '{field}' list")
    elements, coordinates = data["elements"], data["coordinates"]
    if len(elements) != len(coordinates):
        raise errors.InputError(f"{where}: {len(elements)} elements but "
                                f"{len(coordinates)} coordinates")
    return Molecule(
        record_id=record_id,
        elements=tuple(_symbol(e, i, where) for i, e in enumerate(elements, start=1)),
        coordinates=tuple(_xyz(c, i, where) for i, c in enumerate(coordinates, start=1)),
        charge=whole_number(data.get("charge", 0), f"{where}: charge"),
        multiplicity=whole_number(data.get("multiplicity", 1), f"{where}: multiplicity",
                                  minimum=1),
    )


def whole_number(value: object, what: str, *, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InputError(f"{what} must be a whole number (got {value!r})")
    if minimum is not None and value < minimum:
        raise errors.InputError(f"{what} must be at least {minimum} (got {value})")
    return value


def is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _symbol(value: object, index: int, where: str) -> str:
    symbol = value.strip().capitalize() if isinstance(value, str) else None
    if symbol not in ATOMIC_NUMBERS:
        raise errors.InputError(f"{where}: unknown element symbol {value!r} (atom {index})")
    return symbol


def _xyz(value: object, index: int, where: str) -> Tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(map(is_number, value)):
        raise errors.InputError(f"{where}: coordinates of atom {index} are not 3 numbers "
                                f"(got {value!r})")
    return (float(value[0]), float(value[1]), float(value[2]))


def _atom_lines(molecule: Molecule) -> List[str]:
    return [f"{e:<2} {x:16.10f} {y:16.10f} {z:16.10f}"
            for e, (x, y, z) in zip(molecule.elements, molecule.coordinates)]


def xyz_text(molecule: Molecule, comment: str = "") -> str:
    """An XYZ file (Å); the comment line defaults to the record id."""
    lines = [str(len(molecule.elements)), (comment or molecule.record_id).replace("\n", " ")]
    return "\n".join(lines + _atom_lines(molecule)) + "\n"


def orca_coordinates(molecule: Molecule) -> str:
    """ORCA's `* xyz CHARGE MULT` ... `*` block (Å)."""
    lines = [f"* xyz {molecule.charge} {molecule.multiplicity}"]
    return "\n".join(lines + [f"  {line}" for line in _atom_lines(molecule)] + ["*"]) + "\n"
