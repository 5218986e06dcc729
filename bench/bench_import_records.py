"""Import speed of `import_records` into a fresh SQLite database, per file format.

    .venv/bin/python bench/bench_import_records.py [--records 100000]

Writes N small molecules (3-12 atoms of H, C, N, O; id, charge, multiplicity and an energy
each) as extended XYZ and as JSON Lines in a temporary directory, then for each file runs the
real command (`manage.py import_records bench FILE --create`) in a fresh process against a
fresh SQLite database migrated for it, and prints one row per format with wall-clock seconds
of the import alone (reading, checking, inserting, recounting).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ELECTRONS = {"H": 1, "C": 6, "N": 7, "O": 8}


def molecules(count: int, seed: int = 1):
    rng = random.Random(seed)
    for i in range(count):
        elements = [rng.choice("CCNO") for _ in range(rng.randint(1, 5))]
        elements += ["H"] * rng.randint(2, 7)
        if sum(ELECTRONS[e] for e in elements) % 2:
            elements.append("H")
        coordinates = [[round(rng.uniform(-3, 3), 6) for _ in range(3)] for _ in elements]
        yield {"id": f"bench-{i}", "elements": elements, "coordinates": coordinates,
               "charge": 0, "multiplicity": 1, "energy": round(rng.uniform(-300, -40), 8)}


def write_files(directory: Path, count: int) -> dict[str, Path]:
    extxyz, jsonl = directory / "bench.extxyz", directory / "bench.jsonl"
    with open(extxyz, "w") as xyz, open(jsonl, "w") as lines:
        for m in molecules(count):
            lines.write(json.dumps(m) + "\n")
            xyz.write(f"{len(m['elements'])}\n"
                      f"Properties=species:S:1:pos:R:3 id={m['id']} charge={m['charge']} "
                      f"multiplicity={m['multiplicity']} energy={m['energy']} pbc=\"F F F\"\n")
            for element, (x, y, z) in zip(m["elements"], m["coordinates"]):
                xyz.write(f"{element:<2} {x:12.6f} {y:12.6f} {z:12.6f}\n")
    return {"extxyz": extxyz, "jsonl": jsonl}


def import_seconds(path: Path, directory: Path) -> tuple[float, str]:
    """Migrate a fresh SQLite database, then time the import command alone in that process."""
    env = dict(os.environ, HTPORTAL_VAR_DIR=str(directory),
               DATABASE_URL=f"sqlite:///{directory / (path.suffix[1:] + '.sqlite3')}",
               DJANGO_SETTINGS_MODULE="htportal.settings")
    code = (
        "import time, django, sys\n"
        "django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "t = time.perf_counter()\n"
        f"call_command('import_records', 'bench', {str(path)!r}, '--create')\n"
        "print(f'SECONDS {time.perf_counter() - t}')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    summary = [line for line in out.splitlines() if not line.startswith("SECONDS")]
    return float(out.rsplit("SECONDS ", 1)[1]), " ".join(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="htportal-bench-") as tmp:
        directory = Path(tmp)
        files = write_files(directory, args.records)
        print(f"{'format':<8} {'records':>9} {'MB':>6} {'seconds':>8} {'records/s':>10}")
        for name, path in files.items():
            seconds, summary = import_seconds(path, directory)
            size = path.stat().st_size / 1e6
            print(f"{name:<8} {args.records:>9,} {size:>6.1f} {seconds:>8.2f} "
                  f"{args.records / seconds:>10,.0f}   ({summary})")


if __name__ == "__main__":
    main()
