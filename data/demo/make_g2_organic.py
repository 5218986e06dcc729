"""Writes g2_organic.extxyz from ase's copy of the G2 set (run from the repository root:
.venv/bin/python data/demo/make_g2_organic.py). See README.md in this folder."""
from __future__ import annotations

from pathlib import Path

from ase.collections import g2

HERE = Path(__file__).resolve().parent
EXTRA_INORGANICS = ("H2O", "NH3", "H2O2", "N2H4")  # a few small molecules without carbon


def multiplicity(atoms) -> int:
    """2S + 1 from the set's initial magnetic moments (one unpaired electron = 1 µB)."""
    return int(round(abs(atoms.get_initial_magnetic_moments().sum()))) + 1


def main() -> None:
    frames = []
    for name in g2.names:
        atoms = g2[name]
        symbols = atoms.get_chemical_symbols()
        if "C" not in symbols and name not in EXTRA_INORGANICS:
            continue
        if len(atoms) < 2:  # single atoms are not molecules
            continue
        lines = [str(len(atoms)),
                 f"Properties=species:S:1:pos:R:3 id=g2-{name} name={name} "
                 f"formula={atoms.get_chemical_formula()} charge=0 "
                 f"multiplicity={multiplicity(atoms)} pbc=\"F F F\""]
        lines += [f"{s:<2} {x:12.6f} {y:12.6f} {z:12.6f}"
                  for s, (x, y, z) in zip(symbols, atoms.positions)]
        frames.append("\n".join(lines) + "\n")
    (HERE / "g2_organic.extxyz").write_text("".join(frames))
    print(f"wrote {len(frames)} molecules")


if __name__ == "__main__":
    main()
