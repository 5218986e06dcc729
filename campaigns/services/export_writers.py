"""Text writers of results exports, one frame at a time: JSON Lines, extended XYZ (written by
ase.io.write, as ase, MACE and other extxyz readers read it) and QCSchema AtomicResult JSON Lines
(built, and so validated, by qcelemental's own models)."""
from __future__ import annotations

import io
import json
from typing import Callable, Optional

import ase
import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from qcelemental.exceptions import ValidationError as QcelValidationError
from qcelemental.models import AtomicResult, Molecule

from campaigns.services.export_frames import BOHR_ANGSTROM, COORDINATES_UNIT, Frame, Units

# Keys of extended XYZ a training code reads: "" writes ase's own energy= and forces columns;
# "REF_" writes REF_energy, REF_forces and REF_charges, which MACE reads with
# --energy_key REF_energy --forces_key REF_forces (its recommended way, so that ase never mixes
# them with a calculator's results).
KEY_PREFIXES = ("", "REF_")


class FrameRefused(ValueError):
    """A frame the format's own model refuses (qcelemental: an impossible charge/multiplicity)."""


Writer = Callable[[Frame], str]


def jsonl_writer(*, units: Units, key_prefix: str = "", model: Optional[dict] = None) -> Writer:
    def write(frame: Frame) -> str:
        line: dict = {"id": frame.record_id, "elements": frame.elements,
                      "coordinates": frame.coordinates, "charge": frame.charge,
                      "multiplicity": frame.multiplicity}
        if frame.energy is not None:
            line["energy"] = frame.energy
        if frame.forces is not None:
            line["forces"] = frame.forces
        if frame.atomic_charges is not None:
            line["atomic_charges"] = frame.atomic_charges
        line["units"] = {"coordinates": COORDINATES_UNIT, "energy": units.energy,
                         "forces": units.forces, "atomic_charges": "e"}
        line["results"] = frame.values  # as stored: atomic units, each value with its unit
        if frame.extra:
            line["extra"] = frame.extra
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
    return write


def extxyz_writer(*, units: Units, key_prefix: str = "", model: Optional[dict] = None) -> Writer:
    if key_prefix not in KEY_PREFIXES:
        raise ValueError(f"key prefix {key_prefix!r} (known: '', 'REF_')")

    def write(frame: Frame) -> str:
        atoms = ase.Atoms(symbols=frame.elements, positions=frame.coordinates, pbc=False)
        atoms.info.update(charge=frame.charge, multiplicity=frame.multiplicity,
                          id=frame.record_id, energy_unit=units.energy,
                          forces_unit=units.forces, coordinates_unit=COORDINATES_UNIT)
        if key_prefix:
            if frame.energy is not None:
                atoms.info[f"{key_prefix}energy"] = frame.energy
            if frame.forces is not None:
                atoms.arrays[f"{key_prefix}forces"] = np.array(frame.forces, dtype=float)
            if frame.atomic_charges is not None:
                atoms.arrays[f"{key_prefix}charges"] = np.array(frame.atomic_charges)
        else:
            results = {}
            if frame.energy is not None:
                results["energy"] = frame.energy
            if frame.forces is not None:
                results["forces"] = np.array(frame.forces, dtype=float)
            if frame.atomic_charges is not None:
                results["charges"] = np.array(frame.atomic_charges)
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
        buffer = io.StringIO()
        ase.io.write(buffer, atoms, format="extxyz")
        return buffer.getvalue()
    return write


def qcschema_writer(*, units: Units, key_prefix: str = "", model: Optional[dict] = None) -> Writer:
    """AtomicResult JSON, one a line, always in atomic units (QCSchema's own: Eh, bohr)."""
    model = model or {"method": "unknown", "basis": None}

    def write(frame: Frame) -> str:
        values, computed = frame.values, frame.computed
        energy = _stored(values, "energy", "Eh")
        gradient = _stored(values, "gradient", "Eh/bohr")
        if energy is None:
            raise FrameRefused(f"record {frame.record_id}: no energy in Eh")
        properties = {"return_energy": energy, "calcinfo_natom": len(frame.elements)}
        if gradient is not None:
            properties["return_gradient"] = gradient
        dipole = _stored(values, "dipole", "e·bohr")
        if dipole is not None:
            properties["scf_dipole_moment"] = dipole
        try:
            molecule = Molecule(
                symbols=frame.elements,
                geometry=[c / BOHR_ANGSTROM for row in frame.coordinates for c in row],
                molecular_charge=frame.charge, molecular_multiplicity=frame.multiplicity,
                fix_com=True, fix_orientation=True, name=frame.record_id[:100])
            result = AtomicResult(
                molecule=molecule, driver="gradient" if gradient is not None else "energy",
                model={"method": computed.get("method") or model["method"],
                       "basis": computed.get("basis", model.get("basis"))},
                return_result=gradient if gradient is not None else energy,
                properties=properties, success=True,
                provenance={"creator": str(computed.get("program") or "htportal"),
                            "version": str(computed.get("version") or ""),
                            "routine": "htportal.export_results"},
                extras={"htportal": {"record_id": frame.record_id, "results": values,
                                     "host": computed.get("host")}})
        except (ValueError, QcelValidationError) as exc:  # pydantic's, and qcelemental's own
            raise FrameRefused(f"record {frame.record_id}: {str(exc).splitlines()[0]}") from None
        return result.json() + "\n"
    return write


def _stored(values: dict, name: str, unit: str):
    item = values.get(name)
    if isinstance(item, dict) and item.get("unit") == unit:
        return item.get("value")
    return None


WRITERS = {"jsonl": jsonl_writer, "extxyz": extxyz_writer, "qcschema": qcschema_writer}
