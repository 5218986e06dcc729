"""One exported frame: what was computed for a record, in the units of the export.

A frame takes the charge, the multiplicity and the geometry from the result's own `computed`
block when the worker stored one (what the program was really given: an arg set's `charge` /
`uhf`, or the optimised geometry of an `opt` run), and from the record's input otherwise. Forces
are -gradient, and the worker stores a gradient only at the geometry it stored with it, so a
frame's forces always belong to its coordinates.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

log = logging.getLogger(__name__)

HARTREE_EV = 27.211386245988  # eV per Eh (CODATA 2018)
BOHR_ANGSTROM = 0.529177210903  # Å per bohr (CODATA 2018)
STORED_ENERGY_UNIT = "Eh"
STORED_GRADIENT_UNIT = "Eh/bohr"
COORDINATES_UNIT = "Ang"
# Per-atom charges a frame carries, the first of these the result holds (or the one asked for).
CHARGE_KEYS = ("charges", "mbis_charges", "hirshfeld_charges", "loewdin_charges",
               "mulliken_charges")


@dataclass(frozen=True)
class Units:
    name: str
    energy: str
    forces: str
    energy_factor: float  # from Eh
    forces_factor: float  # from Eh/bohr


UNITS = {
    "ev": Units("ev", "eV", "eV/Ang", HARTREE_EV, HARTREE_EV / BOHR_ANGSTROM),
    "au": Units("au", "Eh", "Eh/bohr", 1.0, 1.0),
}
DEFAULT_UNITS = "ev"  # what ase, MACE and every extxyz reader expect


@dataclass
class Frame:
    record_id: str
    elements: List[str]
    coordinates: List[List[float]]  # Å
    charge: int
    multiplicity: int
    energy: Optional[float] = None  # in the export's units
    forces: Optional[List[List[float]]] = None
    atomic_charges: Optional[List[float]] = None  # e
    computed: dict = field(default_factory=dict)  # the result's provenance, as stored
    values: dict = field(default_factory=dict)  # the result as stored (atomic units)
    extra: dict = field(default_factory=dict)  # the record's other input fields


def frame_of(record: dict, values: dict, units: Units, *,
             charges_key: Optional[str] = None) -> Frame:
    """The frame of one record's result `values` (record[output_key][arg_set])."""
    data = record.get("input") or {}
    computed = values.get("computed") if isinstance(values.get("computed"), dict) else {}
    elements = _list(computed.get("elements")) or _list(data.get("elements"))
    coordinates = _geometry(computed.get("coordinates"), len(elements)) or data.get(
        "coordinates", [])
    frame = Frame(
        record_id=str(record["id"]), elements=list(elements), coordinates=coordinates,
        charge=_integer(computed.get("charge"), data.get("charge", 0)),
        multiplicity=_integer(computed.get("multiplicity"), data.get("multiplicity", 1)),
        computed=computed, values=values,
        extra={k: v for k, v in data.items()
               if k not in ("elements", "coordinates", "charge", "multiplicity")})
    frame.energy = _energy(values, units, frame.record_id)
    frame.forces = _forces(values, units, len(elements), frame.record_id)
    frame.atomic_charges = _atomic_charges(values, len(elements), charges_key)
    return frame


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _integer(value: Any, default: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default if isinstance(default, int) else 0


def _geometry(value: Any, atoms: int) -> Optional[List[List[float]]]:
    if (isinstance(value, list) and len(value) == atoms and atoms and all(
            isinstance(row, list) and len(row) == 3 and all(map(is_number, row))
            for row in value)):
        return value
    return None


def _energy(values: dict, units: Units, record_id: str) -> Optional[float]:
    energy = _named(values, "energy", STORED_ENERGY_UNIT, record_id)
    if energy is None or not is_number(energy):
        return None
    return energy * units.energy_factor


def _forces(values: dict, units: Units, atoms: int, record_id: str) -> Optional[list]:
    gradient = _named(values, "gradient", STORED_GRADIENT_UNIT, record_id)
    if gradient is None:
        return None
    if (not isinstance(gradient, list) or len(gradient) != atoms or not all(
            isinstance(row, list) and len(row) == 3 and all(map(is_number, row))
            for row in gradient)):
        log.warning("record %s: gradient is not %s x 3 numbers; forces left out", record_id, atoms)
        return None
    return [[-g * units.forces_factor for g in row] for row in gradient]


def _atomic_charges(values: dict, atoms: int, key: Optional[str]) -> Optional[List[float]]:
    for name in ([key] if key else CHARGE_KEYS):
        item = values.get(name)
        if isinstance(item, dict) and item.get("unit") == "e":
            charges = item.get("value")
            if isinstance(charges, list) and len(charges) == atoms and all(
                    map(is_number, charges)):
                return [float(q) for q in charges]
    return None


def _named(values: dict, name: str, unit: str, record_id: str) -> Any:
    """The value of `name` if it is stored in `unit`; None (and a warning) otherwise."""
    item = values.get(name)
    if not isinstance(item, dict):
        return None
    if item.get("unit") != unit:
        log.warning("record %s: %s is in %r, not %s; left out", record_id, name,
                    item.get("unit"), unit)
        return None
    return item.get("value")


def is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
