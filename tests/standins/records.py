"""Records for the runtime tests, with the geometries of the fixtures."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def read_xyz(path: Path):
    """(elements, coordinates in Å) of an XYZ file."""
    lines = path.read_text().splitlines()
    atoms = [line.split() for line in lines[2:2 + int(lines[0])]]
    return [a[0] for a in atoms], [[float(x) for x in a[1:4]] for a in atoms]


def record(record_id: str, xyz: Optional[str] = None, **extra) -> dict:
    """A record with the geometry of tests/fixtures/<xyz> (default: the xtb water)."""
    elements, coordinates = read_xyz(FIXTURES / (xyz or "xtb/water/water.xyz"))
    data = {"elements": elements, "coordinates": coordinates, "charge": 0, "multiplicity": 1}
    return {"id": record_id, "input": dict(data, **extra)}


WATER = record("water")
METHANOL = record("methanol", "xtb/methanol/methanol.xyz")
