"""orca.sequential with a STAND-IN for ORCA: tests/standins/orca replays real ORCA outputs.

ORCA is licensed software and cannot be installed here, so these tests run
tests/standins/orca in its place. The stand-in checks the input file it is given (a '!' route
line; one `* xyz CHARGE MULT` block whose atoms, coordinates, charge and multiplicity are what
the test expects, passed through ORCA_STANDIN_EXPECT_* variables), exits 1 with an
"INPUT ERROR" message on a bad one, and otherwise replays a real ORCA output from
tests/fixtures/orca/ (cclib's test data) on stdout and writes an orca.gbw file. What runs for
real: the task function, programs.run_program, the ORCA parsers and the kept files.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml

from workers.runtime.execute import execute
from workers.runtime.keepfiles import decode
from tests.standins.records import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standins" / "orca"
REPLAY = "water_opt_freq_orca4.out"
TRUNCATED = "dvb_sp_dft_orca6_truncated_midscf.out"
EXPECTED = next(e["expected"] for e in json.loads((FIXTURES / "MANIFEST.json").read_text())
                if e["file"] == f"orca/{REPLAY}")


def _water():
    """The geometry the replayed ORCA run started from: its first coordinate block (Å)."""
    lines = (FIXTURES / "orca" / REPLAY).read_text().splitlines()
    start = lines.index("CARTESIAN COORDINATES (ANGSTROEM)") + 2
    atoms = [line.split() for line in lines[start:start + 3]]
    return {"id": "water-1", "input": {"elements": [a[0] for a in atoms],
                                       "coordinates": [[float(x) for x in a[1:]] for a in atoms],
                                       "charge": 0, "multiplicity": 1}}


WATER = _water()


def _example_arg_set() -> dict:
    """The arg set of examples/wb97mv.yaml, as the portal puts it into the spec."""
    config = yaml.safe_load((ROOT / "examples" / "wb97mv.yaml").read_text())["campaign_config"]
    [arg_set] = config["args"]
    return {"name": arg_set["name"], "parameters": {"route": arg_set["route"]},
            "parsers": arg_set["parsers"], "keep_files": arg_set["keep_files"]}


WB97 = _example_arg_set()


@pytest.fixture(autouse=True)
def standin(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("ORCA_EXE", str(STANDIN))
    monkeypatch.setenv("ORCA_STANDIN_REPLAY", REPLAY)
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_NATOMS", "3")
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_ELEMENTS", "O,H,H")
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_COORDS", json.dumps(WATER["input"]["coordinates"]))
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_CHARGE", "0")
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_MULT", "1")
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_ROUTE",
                       "wB97m-d3bj def2-tzvpp def2/j rijcosx engrad tightscf")
    # A program's environment is a clean one: the stand-in's settings are allowlisted.
    monkeypatch.setenv("HTPORTAL_PROGRAM_ENV", ",".join(
        ["ORCA_STANDIN_REPLAY"] + [f"ORCA_STANDIN_EXPECT_{what}" for what in
                                   ("NATOMS", "ELEMENTS", "COORDS", "CHARGE", "MULT", "ROUTE")]))


def _run(*arg_sets, record=WATER, function="htrq.htrun.scripts.orca.sequential"):
    spec = {"function": function, "job_timeout": 60, "arg_sets": list(arg_sets)}
    return execute(function=function, record=record, spec=spec)


def test_the_wb97mv_arg_set_gives_energy_gradient_and_dipole():
    doc = _run(WB97)

    assert (doc["function"], doc["status"]) == ("orca.sequential", "ok")
    outcome = doc["arg_sets"]["wb97md3bj"]
    assert outcome["error"] is None and outcome["exit_code"] == 0
    values = outcome["values"]
    assert values["energy"] == {"value": -76.348972603816, "unit": "Eh"}
    assert values["gradient"]["value"] == EXPECTED["gradient_Eh_per_bohr"]
    assert values["gradient"]["unit"] == "Eh/bohr"
    assert values["dipole"]["value"] == pytest.approx([0.0, 0.0, -0.94176])
    assert values["dipole_magnitude"]["value"] == pytest.approx(0.94176)


def test_the_result_says_what_orca_computed():
    computed = _run(WB97)["arg_sets"]["wb97md3bj"]["values"]["computed"]
    # The replayed output is ORCA 4.1.2's (its banner); the route's keyword line is the method.
    assert computed == {"program": "orca", "version": "4.1.2",
                        "method": "wB97m-d3bj def2-tzvpp def2/j rijcosx engrad tightscf",
                        "charge": 0, "multiplicity": 1}


def test_it_keeps_the_output_and_the_gbw_file():
    doc = _run(WB97)

    files = {f["name"]: f for f in doc["files"]}
    assert sorted(files) == ["water-1_wb97md3bj.gbw", "water-1_wb97md3bj.out"]
    assert decode(files["water-1_wb97md3bj.out"]) == (FIXTURES / "orca" / REPLAY).read_bytes()
    assert files["water-1_wb97md3bj.gbw"]["source"] == "orca.gbw"
    assert decode(files["water-1_wb97md3bj.gbw"]).startswith(b"ORCA-STANDIN-GBW\0")


def test_it_writes_the_route_then_the_coordinate_block():
    arg_set = dict(WB97, keep_files={"orca.inp": "{id}.inp"})
    [kept] = _run(arg_set)["files"]

    assert decode(kept).decode() == (
        WB97["parameters"]["route"].rstrip() + "\n\n"
        "* xyz 0 1\n"
        "  O      0.0000000000     0.0000000000     0.1192620000\n"
        "  H      0.0000000000     0.7632390000    -0.4770470000\n"
        "  H      0.0000000000    -0.7632390000    -0.4770470000\n"
        "*\n"
    )


def test_a_truncated_output_fails_its_arg_set_and_the_first_keeps_its_result():
    route = WB97["parameters"]["route"] + f"# standin-replay: {TRUNCATED}\n"
    second = dict(WB97, name="cut", parameters={"route": route},
                  keep_files={"stdout": "{id}_cut.out"})
    doc = _run(WB97, second)

    assert doc["status"] == "failed"
    assert doc["arg_sets"]["wb97md3bj"]["values"]["energy"]["value"] == -76.348972603816
    cut = doc["arg_sets"]["cut"]
    assert (cut["status"], cut["values"], cut["exit_code"]) == ("failed", {}, 0)
    assert cut["error"]["class"] == "ParseError"
    assert cut["error"]["message"] == (
        "htrq.htrun.parser.orca.total_energy on stdout: ORCA output has no 'FINAL SINGLE POINT "
        "ENERGY' line and no 'ORCA TERMINATED NORMALLY' line: the run did not finish")
    assert cut["error"]["output_tail"]
    names = [f["name"] for f in doc["files"]]
    assert names == ["water-1_wb97md3bj.out", "water-1_wb97md3bj.gbw", "water-1_cut.out"]


def test_the_standin_rejecting_the_input_is_program_failed_with_its_message(monkeypatch):
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_NATOMS", "4")
    doc = _run(WB97)

    error = doc["arg_sets"]["wb97md3bj"]["error"]
    assert (error["class"], error["message"]) == ("ProgramFailed", "orca: exited with code 1")
    assert "INPUT ERROR: expected 4 atoms, got 3" in error["output_tail"]


def test_the_standin_rejects_a_route_without_a_bang_line():
    bad = dict(WB97, parameters={"route": "wB97m-d3bj def2-tzvpp\n"})
    error = _run(bad)["arg_sets"]["wb97md3bj"]["error"]
    assert "INPUT ERROR: the input must start with a '!' route line" in error["output_tail"]


def test_a_charged_radical_record_gets_its_charge_and_multiplicity(monkeypatch):
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_CHARGE", "1")
    monkeypatch.setenv("ORCA_STANDIN_EXPECT_MULT", "2")
    cation = {"id": "water+", "input": dict(WATER["input"], charge=1, multiplicity=2)}
    assert _run(WB97, record=cation)["status"] == "ok"


def test_a_missing_orca_says_where_to_set_it(monkeypatch, tmp_path):
    monkeypatch.delenv("ORCA_EXE")
    monkeypatch.setenv("PATH", str(tmp_path))
    error = _run(WB97)["arg_sets"]["wb97md3bj"]["error"]
    assert error == {"class": "ProgramNotFound", "output_tail": "", "fault": "worker",
                     "message": "orca: program not found (set ORCA_EXE or PATH)"}


@pytest.mark.parametrize("parameters, message", [
    ({}, "arg set 'wb97md3bj': parameters have no 'route'"),
    ({"route": ["! sp"]}, "arg set 'wb97md3bj': parameter 'route' must be non-empty text "
                          "(got ['! sp'])"),
])
def test_a_missing_or_bad_route_is_an_input_error(parameters, message):
    error = _run(dict(WB97, parameters=parameters))["arg_sets"]["wb97md3bj"]["error"]
    assert error == {"class": "InputError", "message": message, "output_tail": ""}
