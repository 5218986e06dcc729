"""vina.dock with the real AutoDock Vina 1.2.3 (/usr/bin/vina) and Open Babel (/usr/bin/obabel)."""
from __future__ import annotations

import tempfile

import pytest

from workers.runtime.execute import execute
from workers.runtime.keepfiles import decode
from tests.standins.records import FIXTURES, METHANOL

DATA = FIXTURES / "vina" / "debian_testdata_seed42"
RECEPTOR = {"name": "protein.pdbqt", "content": (DATA / "protein.pdbqt").read_text()}
LIGAND = {"id": "lig-1", "input": {"ligand_pdbqt": (DATA / "ligand.pdbqt").read_text()}}
# The box of command.txt; a smaller search (exhaustiveness 1, one CPU) to keep the test short.
DOCK = {"name": "dock",
        "parameters": {"receptor": RECEPTOR, "center": [11, 90.5, 57.5], "size": [22, 24, 28],
                       "exhaustiveness": 1, "seed": 42, "num_modes": 9, "cpu": 1},
        "parsers": {"stdout": ["vina.affinities"]},
        "keep_files": {"out.pdbqt": "{id}_poses.pdbqt", "stdout": "{id}_vina.log"}}


@pytest.fixture(autouse=True)
def tmpdir_is_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _run(record, arg_set=DOCK):
    return execute(function="vina.dock", record=record,
                   spec={"function": "vina.dock", "job_timeout": 300, "arg_sets": [arg_set]})


def _with(**parameters):
    return dict(DOCK, parameters=dict(DOCK["parameters"], **parameters))


@pytest.mark.slow
def test_it_docks_the_fixture_ligand_and_keeps_the_poses():
    doc = _run(LIGAND)

    outcome = doc["arg_sets"]["dock"]
    assert outcome["status"] == "ok", outcome["error"]
    values = outcome["values"]
    affinities = values["affinities"]["value"]
    assert values["affinities"]["unit"] == "kcal/mol"
    assert 1 <= len(affinities) <= 9 and affinities == sorted(affinities)
    assert values["best_affinity"]["value"] == affinities[0] < -7
    files = {f["name"]: f for f in doc["files"]}
    poses = decode(files["lig-1_poses.pdbqt"]).decode()
    assert poses.count("REMARK VINA RESULT:") >= 1
    log = decode(files["lig-1_vina.log"]).decode()
    assert "random seed: 42" in log and "Exhaustiveness: 1" in log and "CPU: 1" in log
    assert "Grid center: X 11 Y 90.5 Z 57.5" in log and "Grid size  : X 22 Y 24 Z 28" in log


@pytest.mark.slow
def test_a_ligand_without_pdbqt_is_converted_from_its_geometry():
    doc = _run(METHANOL, _with(num_modes=3))

    outcome = doc["arg_sets"]["dock"]
    assert outcome["status"] == "ok", outcome["error"]
    assert 1 <= len(outcome["values"]["affinities"]["value"]) <= 3
    poses = decode(next(f for f in doc["files"] if f["source"] == "out.pdbqt")).decode()
    atoms = [line for line in poses.split("ENDMDL")[0].splitlines()
             if line.startswith(("ATOM", "HETATM"))]
    # Open Babel's PDBQT keeps the polar hydrogen only (AutoDock types: C, OA, HD).
    assert [line.split()[-1] for line in atoms] == ["C", "OA", "HD"]


def test_without_obabel_a_geometry_is_the_workers_fault(monkeypatch, tmp_path):
    monkeypatch.setenv("VINA_EXE", "/usr/bin/vina")
    monkeypatch.delenv("OBABEL_EXE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    error = _run(METHANOL)["arg_sets"]["dock"]["error"]
    assert error == {"class": "ProgramNotFound", "output_tail": "", "fault": "worker", "message":
                     "obabel: program not found (set OBABEL_EXE or PATH); record 'methanol' "
                     "has no 'ligand_pdbqt', so its geometry must be converted"}


@pytest.mark.parametrize("change, message", [
    ({"receptor": None}, "arg set 'dock': parameters have no 'receptor'"),
    ({"receptor": "protein.pdbqt"},
     "arg set 'dock': parameter 'receptor' must be an object (got 'protein.pdbqt')"),
    ({"receptor": {"name": "protein.pdbqt"}},
     "arg set 'dock': parameter 'receptor' must have the PDBQT text as 'content'"),
    ({"receptor": {"name": "../protein.pdbqt", "content": "x"}},
     "arg set 'dock': parameter 'receptor': kept file name '../protein.pdbqt' must be a plain "
     "file name (no '/', '\\' or '..')"),
    ({"receptor": {"name": "protein.pdb", "content": "x"}},
     "arg set 'dock': parameter 'receptor' must have a 'name' ending in .pdbqt, not "
     "'ligand.pdbqt' (got 'protein.pdb')"),
    ({"center": None}, "arg set 'dock': parameters have no 'center'"),
    ({"center": [1, 2]}, "arg set 'dock': parameter 'center' must be a list of 3 numbers "
                         "(got [1, 2])"),
    ({"size": [20, 0, 20]}, "arg set 'dock': parameter 'size' must be a list of 3 positive "
                            "numbers (got [20, 0, 20])"),
    ({"exhaustiveness": "8"}, "arg set 'dock': parameter 'exhaustiveness' must be a whole number "
                              "of at least 1 (got '8')"),
])
def test_bad_parameters_fail_before_vina_runs(change, message):
    error = _run(LIGAND, _with(**change))["arg_sets"]["dock"]["error"]
    assert error == {"class": "InputError", "message": message, "output_tail": ""}


def test_an_empty_ligand_pdbqt_is_an_input_error():
    error = _run({"id": "lig-2", "input": {"ligand_pdbqt": " "}})["arg_sets"]["dock"]["error"]
    assert error["message"] == "record 'lig-2': 'ligand_pdbqt' must be non-empty PDBQT text"
