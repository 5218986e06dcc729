"""The functions bench_peers.py's peers run (Parsl apps, plain RQ jobs): importable by their
worker processes as `bench._peer_tasks` (cwd or PYTHONPATH at the repository root).

`xtb_grad` runs the command htportal's xtb.run runs for the demo campaign (GFN2, --grad, one
thread, in a fresh directory) on one record and returns its id, xtb's own run time, the exit
status and the total energy line; `noop` returns the record id.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

XTB_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "OMP_STACKSIZE": "500M", "LC_ALL": "C"}


def xyz_text(record: dict) -> str:
    data = record["input"]
    lines = [str(len(data["elements"])), record["id"]]
    lines += [f"{element} {x:.8f} {y:.8f} {z:.8f}"
              for element, (x, y, z) in zip(data["elements"], data["coordinates"])]
    return "\n".join(lines) + "\n"


def xtb_grad(record: dict) -> dict:
    data = record["input"]
    workdir = tempfile.mkdtemp(prefix="peer-xtb-")
    try:
        with open(os.path.join(workdir, "input.xyz"), "w") as handle:
            handle.write(xyz_text(record))
        argv = ["xtb", "input.xyz", "--gfn", "2", "--grad", "--chrg", str(data.get("charge", 0)),
                "--uhf", str(int(data.get("multiplicity", 1)) - 1)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, **XTB_ENV}
        started = time.monotonic()
        with open(os.path.join(workdir, "stdout"), "wb") as out:
            done = subprocess.run(argv, cwd=workdir, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=600)
        seconds = time.monotonic() - started
        with open(os.path.join(workdir, "stdout"), errors="replace") as out:
            energy = next((line.strip() for line in out if "TOTAL ENERGY" in line), None)
        return {"id": record["id"], "xtb_s": seconds, "returncode": done.returncode,
                "energy": energy}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def noop(record: dict) -> dict:
    return {"id": record["id"]}
