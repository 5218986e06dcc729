"""The worker bundle: built by the management command, run by a bare interpreter (no venv, -I)
against the test Redis, computing a real xtb energy."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from rq import Queue
from rq.serializers import JSONSerializer

from workers.bundle import MAX_BYTES

WATER = Path(__file__).resolve().parent / "fixtures" / "xtb" / "water" / "water.xyz"
WATER_ENERGY = -5.0702081973  # Eh, xtb 6 GFN2 on this geometry (tests/fixtures/xtb/water)


def bare_python() -> str:
    """A Python outside any virtual environment: the oldest supported (3.9) when there is one."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    candidates += [shutil.which("python3.9") or "", "/usr/bin/python3"]
    for candidate in filter(None, candidates):
        check = subprocess.run(
            [candidate, "-I", "-c", "import sys; print(sys.prefix == sys.base_prefix, "
                                    "sys.version_info >= (3, 9))"],
            capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.split() == ["True", "True"]:
            return candidate
    raise AssertionError(f"no Python 3.9+ outside a virtual environment among {candidates}")


def water_record() -> dict:
    lines = WATER.read_text().splitlines()
    atoms = [line.split() for line in lines[2:2 + int(lines[0])]]
    return {"id": "water", "input": {"elements": [a[0] for a in atoms],
                                     "coordinates": [[float(x) for x in a[1:4]] for a in atoms],
                                     "charge": 0, "multiplicity": 1}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "htportal-worker.pyz"
    printed = StringIO()
    call_command("build_worker_bundle", str(out), stdout=printed)
    return out, printed.getvalue()


def test_the_command_writes_one_small_file_and_prints_its_size_and_checksum(bundle):
    out, printed = bundle
    size = out.stat().st_size
    assert size < MAX_BYTES
    assert f"{out}: {size:,} bytes" in printed
    assert f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}" in printed
    assert "rq 2.8.0, redis 7.0.1" in printed


VINA = Path(__file__).resolve().parent / "fixtures" / "vina" / "debian_testdata_seed42"


def vina_job(redis_conn):
    """A real docking (the Debian test data's box, a short search) whose spec, receptor
    included, sits once in Redis under a key, as the portal writes it."""
    spec = {"function": "vina.dock", "job_timeout": 300, "arg_sets": [
        {"name": "site1", "parameters": {
            "receptor": {"name": "protein.pdbqt", "content": (VINA / "protein.pdbqt").read_text()},
            "center": [11, 90.5, 57.5], "size": [22, 24, 28], "exhaustiveness": 1, "seed": 42,
            "cpu": 1, "max_evals": 100000},
         "parsers": {"stdout": ["vina.affinities"]}, "keep_files": {"out.pdbqt": "{id}.pdbqt"}}]}
    redis_conn.set("htportal:spec:test-vina:1", json.dumps(spec))
    record = {"id": "lig1", "input": {"ligand_pdbqt": (VINA / "ligand.pdbqt").read_text()}}
    return Queue("dock", connection=redis_conn, serializer=JSONSerializer).enqueue(
        "vina.dock", record=record, spec_key="htportal:spec:test-vina:1", reply_to="replies")


@pytest.mark.slow
def test_a_bare_python_runs_real_xtb_and_vina_tasks_from_the_bundle(bundle, redis_conn,
                                                                    redis_server, tmp_path):
    out, _ = bundle
    spec = {"function": "xtb.run", "job_timeout": 300, "arg_sets": [
        {"name": "gfn2", "parameters": {"method": "gfn2", "task": "grad"},
         "parsers": {"stdout": ["xtb.energy"]}, "keep_files": {"stdout": "{id}_gfn2.out"}}]}
    job = Queue("xtb", connection=redis_conn, serializer=JSONSerializer).enqueue(
        "xtb.run", record=water_record(), spec=spec, reply_to="replies")
    docking = vina_job(redis_conn)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
           "HTPORTAL_REDIS_URL": redis_server.url}

    run = subprocess.run([bare_python(), "-I", str(out), "--max-tasks", "2", "xtb", "dock"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stderr
    result = job.return_value(refresh=True)
    assert result["status"] == "ok", result
    energy = result["arg_sets"]["gfn2"]["values"]["energy"]
    assert energy["unit"] == "Eh"
    assert energy["value"] == pytest.approx(WATER_ENERGY, abs=1e-6)
    assert result["files"][0]["name"] == "water_gfn2.out"
    reply = json.loads(redis_conn.lpop("replies"))
    assert reply["job_id"] == job.id and reply["result"]["record_id"] == "water"
    docked = docking.return_value(refresh=True)
    assert docked["status"] == "ok", docked
    values = docked["arg_sets"]["site1"]["values"]
    assert values["best_affinity"]["unit"] == "kcal/mol" and values["best_affinity"]["value"] < 0
    assert values["best_affinity"]["value"] == min(values["affinities"]["value"])
    assert [f["name"] for f in docked["files"]] == ["lig1.pdbqt"]
    assert "Traceback" not in run.stderr


def test_the_same_sources_give_the_same_bytes(bundle, tmp_path):
    out, _ = bundle
    again = tmp_path / "again.pyz"
    call_command("build_worker_bundle", str(again), stdout=StringIO())
    assert again.read_bytes() == out.read_bytes()


def test_the_bundle_exits_with_the_workers_exit_code(bundle, tmp_path):
    out, _ = bundle
    run = subprocess.run([bare_python(), "-I", str(out), "--redis-url", "mysql://x", "q"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "bad Redis URL" in run.stderr
