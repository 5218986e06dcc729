"""xtb.run with the real xtb (/usr/bin/xtb) and the parsers of examples/xtb_gfn2.yaml."""
from __future__ import annotations

import hashlib
import json
import tempfile

import pytest

from workers.runtime.execute import execute
from workers.runtime.keepfiles import decode
from workers.runtime.parsers.xtb import energy as parse_energy
from tests.standins.records import FIXTURES, METHANOL, WATER

MANIFEST = {e["file"]: e["expected"] for e in json.loads((FIXTURES / "MANIFEST.json").read_text())}

# The arg set of examples/xtb_gfn2.yaml, as the portal writes it into the spec.
GFN2 = {"name": "gfn2", "parameters": {"method": "gfn2", "task": "grad"},
        "parsers": {"stdout": ["xtb.energy", "xtb.dipole", "xtb.homo_lumo_gap"],
                    "gradient": ["xtb.gradient"]},
        "keep_files": {"stdout": "{id}_gfn2.out"}}


@pytest.fixture(autouse=True)
def tmpdir_is_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _run(record, *arg_sets):
    return execute(function="xtb.run", record=record,
                   spec={"function": "xtb.run", "job_timeout": 120, "arg_sets": list(arg_sets)})


def _arg_set(name, keep=None, **parameters):
    return {"name": name, "parameters": parameters, "parsers": {"stdout": ["xtb.energy"]},
            "keep_files": keep or {"stdout": f"{{id}}_{name}.out"}}


@pytest.mark.parametrize("record", [WATER, METHANOL], ids=["water", "methanol"])
def test_gfn2_gradient_matches_the_fixture(record):
    doc = _run(record, GFN2)
    name = record["id"]
    expected = MANIFEST[f"xtb/{name}/xtb_stdout.txt"]

    assert doc["status"] == "ok", doc["arg_sets"]["gfn2"]["error"]
    outcome = doc["arg_sets"]["gfn2"]
    values = outcome["values"]
    assert values["energy"]["unit"] == "Eh"
    assert values["energy"]["value"] == pytest.approx(expected["energy_Eh"], abs=1e-6)
    assert values["dipole"]["value"] == pytest.approx(expected["dipole_au"], abs=2e-3)
    assert values["homo_lumo_gap_ev"]["value"] == pytest.approx(expected["homo_lumo_gap_eV"],
                                                                abs=1e-4)
    assert len(values["gradient"]["value"]) == len(record["input"]["elements"])
    assert (outcome["exit_code"], outcome["cpu_s"] > 0) == (0, True)

    [kept] = doc["files"]
    assert (kept["name"], kept["source"], kept["arg_set"]) == (f"{name}_gfn2.out", "stdout", "gfn2")
    stdout = decode(kept)
    assert hashlib.sha256(stdout).hexdigest() == kept["sha256"]
    assert len(stdout) == kept["size"]
    assert parse_energy(stdout.decode())["energy"] == values["energy"]
    assert _xtb_call(stdout.decode()).endswith("input.xyz --gfn 2 --grad --chrg 0 --uhf 0")


def _xtb_call(stdout: str) -> str:
    line = next(l for l in stdout.splitlines() if "program call" in l)
    return line.split(":", 1)[1].strip()


def test_gfnff_runs():
    doc = _run(WATER, _arg_set("ff", method="gfnff", task="sp"))
    values = doc["arg_sets"]["ff"]["values"]
    stdout = decode(doc["files"][0]).decode()

    assert _xtb_call(stdout).endswith("input.xyz --gfnff --sp --chrg 0 --uhf 0")
    assert "G F N - F F" in stdout or "GFN-FF" in stdout
    gfn2 = MANIFEST["xtb/water/xtb_stdout.txt"]["energy_Eh"]
    assert values["energy"]["value"] < 0 and abs(values["energy"]["value"] - gfn2) > 0.1


def test_an_optimisation_lowers_the_energy_and_keeps_the_geometry():
    sp, opt = _arg_set("sp", task="sp"), _arg_set("opt", {"xtbopt.xyz": "{id}_opt.xyz"}, task="opt")
    doc = _run(METHANOL, sp, opt)

    assert doc["status"] == "ok"
    e_sp = doc["arg_sets"]["sp"]["values"]["energy"]["value"]
    e_opt = doc["arg_sets"]["opt"]["values"]["energy"]["value"]
    assert e_opt < e_sp - 1e-5
    [geometry] = [f for f in doc["files"] if f["arg_set"] == "opt"]
    xyz = decode(geometry).decode().splitlines()
    assert geometry["name"] == "methanol_opt.xyz" and xyz[0].strip() == "6"


def test_a_charged_radical_record_passes_chrg_and_uhf():
    cation = {"id": "water+", "input": dict(WATER["input"], charge=1, multiplicity=2)}
    doc = _run(cation, _arg_set("ion", task="sp"))
    stdout = decode(doc["files"][0]).decode()

    assert doc["status"] == "ok"
    assert _xtb_call(stdout).endswith("--chrg 1 --uhf 1")
    assert _total_charge(stdout) == pytest.approx(1.0)


def _total_charge(stdout: str) -> float:
    line = next(l for l in stdout.splitlines() if ":: total charge" in l)
    return float(line.split()[3])


def test_parameters_override_the_records_charge_and_spin_and_add_flags():
    anion = _arg_set("anion", task="sp", charge=-1, uhf=1, flags=["--etemp", "500"], threads=2)
    doc = _run(WATER, anion)
    stdout = decode(doc["files"][0]).decode()

    assert doc["status"] == "ok", doc["arg_sets"]["anion"]["error"]
    assert _xtb_call(stdout).endswith("--chrg -1 --uhf 1 --etemp 500")
    assert _total_charge(stdout) == pytest.approx(-1.0)
    assert any(l.split(":")[0].strip() == "omp threads" and l.split()[-1] == "2"
               for l in stdout.splitlines())


def test_threads_default_to_one():
    stdout = decode(_run(WATER, _arg_set("sp", task="sp"))["files"][0]).decode()
    assert any(l.split(":")[0].strip() == "omp threads" and l.split()[-1] == "1"
               for l in stdout.splitlines())


@pytest.mark.parametrize("parameters, message", [
    ({"method": "gfn3"}, "arg set 'x': parameter 'method' must be one of gfn2, gfn1, gfnff "
                         "(got 'gfn3')"),
    ({"task": "freq"}, "arg set 'x': parameter 'task' must be one of sp, grad, opt (got 'freq')"),
    ({"flags": "--etemp 500"}, "arg set 'x': parameter 'flags' must be a list of strings "
                               "(got '--etemp 500')"),
    ({"threads": 0}, "arg set 'x': parameter 'threads' must be a whole number of at least 1 "
                     "(got 0)"),
    ({"uhf": 1}, "record 'water': multiplicity 2 (1 unpaired) is impossible with 10 electrons "
                 "(charge 0)"),
])
def test_bad_parameters_fail_before_xtb_runs(parameters, message):
    doc = _run(WATER, {"name": "x", "parameters": parameters, "parsers": {}, "keep_files": {}})
    assert doc["arg_sets"]["x"]["error"] == {"class": "InputError", "message": message,
                                             "output_tail": ""}
    assert doc["arg_sets"]["x"]["exit_code"] is None


def test_xtb_failing_is_reported_with_its_output():
    doc = _run(WATER, _arg_set("x", task="sp", flags=["--vparam", "/nonexistent"]))
    error = doc["arg_sets"]["x"]["error"]
    assert (error["class"], error["message"]) == ("ProgramFailed", "xtb: exited with code 1")
    assert error["output_tail"].endswith("abnormal termination of xtb")
    assert doc["arg_sets"]["x"]["exit_code"] == 1
    assert doc["files"][0]["name"] == "water_x.out"  # its output goes back for a look
