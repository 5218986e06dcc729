"""HDF5 exports in the layout neural-network-potential codes read: one group per atom count.

`aimnet2` (the layout of AIMNet2's training examples): groups `/003`, `/028`, ... holding
`coord` (N, n, 3), `numbers` (N, n), `charge` (N,), `mult` (N,), `energy` (N,), `forces`
(N, n, 3) and `charges` (N, n) where the results have them, plus `id` (N,) the record ids.
`torchani` (ANI-style, as torchani.datasets reads): the same groups with `coordinates`,
`species` (atomic numbers), `energies`, `forces`.

Every dataset carries its unit in the attribute `units`. A group's frames all have the same
properties: a frame lacking one its group already has (forces, say) is left out and counted, so
that no array holds made-up values. Written a batch at a time into resizable datasets, so
memory stays at one batch whatever the export's size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List

import h5py
import numpy as np
from ase.data import atomic_numbers

from campaigns.services.export_frames import COORDINATES_UNIT, Frame, Units

LAYOUTS = ("aimnet2", "torchani")
FLUSH_EVERY = 1000
_NAMES = {
    "aimnet2": {"coord": "coord", "numbers": "numbers", "charge": "charge", "mult": "mult",
                "energy": "energy", "forces": "forces", "charges": "charges", "id": "id"},
    "torchani": {"coord": "coordinates", "numbers": "species", "charge": "charge",
                 "mult": "mult", "energy": "energies", "forces": "forces",
                 "charges": "charges", "id": "id"},
}


@dataclass
class Hdf5Report:
    written: int = 0
    left_out: int = 0  # frames without an energy, or lacking a property their group has
    groups: Dict[str, int] = field(default_factory=dict)


def hdf5_write(*, path: str, frames: Iterable[Frame], units: Units,
               layout: str = "aimnet2") -> Hdf5Report:
    """Write `frames` to a new HDF5 file at `path`; return what was written."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown HDF5 layout {layout!r} (known: {', '.join(LAYOUTS)})")
    names = _NAMES[layout]
    report = Hdf5Report()
    pending: Dict[int, List[Frame]] = {}
    with h5py.File(path, "w") as h5:
        h5.attrs["creator"] = "htportal"
        h5.attrs["layout"] = layout
        for frame in frames:
            if frame.energy is None:
                report.left_out += 1
                continue
            group = pending.setdefault(len(frame.elements), [])
            group.append(frame)
            if len(group) >= FLUSH_EVERY:
                _flush(h5, len(frame.elements), group, names, units, report)
                group.clear()
        for atoms, group in pending.items():
            if group:
                _flush(h5, atoms, group, names, units, report)
    return report


def _flush(h5: h5py.File, atoms: int, frames: List[Frame], names: dict, units: Units,
           report: Hdf5Report) -> None:
    key = f"{atoms:03d}"
    group = h5.require_group(key)
    has_forces = names["forces"] in group if len(group) else frames[0].forces is not None
    has_charges = names["charges"] in group if len(group) else (
        frames[0].atomic_charges is not None)
    kept = [f for f in frames if (f.forces is not None) == has_forces
            and (f.atomic_charges is not None) == has_charges]
    report.left_out += len(frames) - len(kept)
    if not kept:
        return
    columns = {
        "coord": (np.array([f.coordinates for f in kept], dtype=np.float64), COORDINATES_UNIT),
        "numbers": (np.array([[atomic_numbers[e] for e in f.elements] for f in kept],
                             dtype=np.int64), ""),
        "charge": (np.array([f.charge for f in kept], dtype=np.float64), "e"),
        "mult": (np.array([f.multiplicity for f in kept], dtype=np.int64), ""),
        "energy": (np.array([f.energy for f in kept], dtype=np.float64), units.energy),
        "id": (np.array([f.record_id for f in kept], dtype=h5py.string_dtype()), ""),
    }
    if has_forces:
        columns["forces"] = (np.array([f.forces for f in kept], dtype=np.float64), units.forces)
    if has_charges:
        columns["charges"] = (np.array([f.atomic_charges for f in kept], dtype=np.float64), "e")
    for name, (array, unit) in columns.items():
        _append(group, names[name], array, unit)
    report.written += len(kept)
    report.groups[key] = report.groups.get(key, 0) + len(kept)


def _append(group: h5py.Group, name: str, array: np.ndarray, unit: str) -> None:
    if name not in group:
        dataset = group.create_dataset(name, data=array, maxshape=(None, *array.shape[1:]),
                                       chunks=True)
        dataset.attrs["units"] = unit
        return
    dataset = group[name]
    start = dataset.shape[0]
    dataset.resize(start + array.shape[0], axis=0)
    dataset[start:] = array
