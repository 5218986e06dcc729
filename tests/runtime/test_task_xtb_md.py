"""xtb molecular dynamics as a task, and what xtb.run says it computed (charge, multiplicity,
the optimised geometry), on the real xtb: the runs here are a fraction of a second."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from workers.runtime import execute
from workers.runtime.parsers import xtb as xtb_parsers
from workers.runtime.tasks.xtb import read_xyz_coordinates

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WATER = {"elements": ["O", "H", "H"],
         "coordinates": [[1.01943, -0.08372, 0.0722], [1.98731, -0.03784, 0.06509],
                         [0.74058, 0.83334, -0.06992]],
         "charge": 0, "multiplicity": 1}
pytestmark = pytest.mark.slow


def run(function: str, parameters: dict, parsers: dict, record: dict = None) -> dict:
    spec = {"function": function, "job_timeout": 120,
            "arg_sets": [{"name": "a", "parameters": parameters, "parsers": parsers}]}
    document = execute.execute(function=function, record={"id": "w", "input": record or WATER},
                               spec=spec)
    outcome = document["arg_sets"]["a"]
    assert outcome["status"] == "ok", outcome["error"]
    return outcome["values"]


def test_a_short_md_gives_its_frames_and_says_how_it_sampled():
    values = run("xtb.md", {"temperature": 300, "time": 0.2, "step": 2, "dump": 20},
                 {"xtb.trj": ["xtb.trajectory"]})
    energies = values["frame_energies"]["value"]
    frames = values["frame_coordinates"]["value"]
    assert len(energies) == len(frames) == 10  # 0.2 ps, a frame every 20 fs
    assert all(math.isfinite(e) and -5.08 < e < -5.0 for e in energies)
    assert values["elements"]["value"] == ["O", "H", "H"]
    assert [len(frame) for frame in frames] == [3] * 10
    assert frames[0] == WATER["coordinates"]  # xtb's first frame is the start geometry
    computed = values["computed"]
    assert (computed["program"], computed["method"], computed["charge"],
            computed["multiplicity"]) == ("xtb", "GFN2-xTB", 0, 1)
    assert computed["version"] == "6.5.1"
    assert computed["sampling"] == {"mode": "md", "temp": 300.0, "time": 0.2, "step": 2.0,
                                    "dump": 20.0, "shake": 1, "hmass": 4}


def test_metadynamics_runs_too():
    values = run("xtb.md", {"mode": "metadyn", "time": 0.1, "step": 2, "dump": 20},
                 {"xtb.trj": ["xtb.trajectory"]})
    assert len(values["frame_energies"]["value"]) == 5
    assert values["computed"]["sampling"]["mode"] == "metadyn"


@pytest.mark.parametrize("parameters, problem", [
    ({"shake": 3}, "parameter 'shake' must be 0, 1 or 2 (got 3)"),
    ({"temperature": -5}, "parameter 'temperature' must be a number of at least 1.0"),
    ({"mode": "remd"}, "parameter 'mode' must be one of md, metadyn"),
])
def test_bad_md_parameters_fail_the_arg_set_with_the_field(parameters, problem):
    spec = {"function": "xtb.md", "arg_sets": [{"name": "a", "parameters": parameters}]}
    document = execute.execute(function="xtb.md", record={"id": "w", "input": WATER}, spec=spec)
    error = document["arg_sets"]["a"]["error"]
    assert error["class"] == "InputError"
    assert problem in error["message"]


def test_an_arg_set_charge_is_what_the_result_says_was_computed():
    values = run("xtb.run", {"charge": 1, "uhf": 1}, {"stdout": ["xtb.energy"]})
    assert (values["computed"]["charge"], values["computed"]["multiplicity"]) == (1, 2)
    assert "coordinates" not in values["computed"]  # a single point: the input geometry


def test_an_optimisation_stores_its_final_geometry_and_the_gradient_there():
    values = run("xtb.run", {"task": "opt", "gradient": True},
                 {"stdout": ["xtb.energy"], "gradient": ["xtb.gradient"]})
    final = values["computed"]["coordinates"]
    assert final != WATER["coordinates"] and len(final) == 3
    # The gradient file's geometry (bohr) is the optimised one: the forces belong to it.
    assert values["gradient"]["unit"] == "Eh/bohr" and len(values["gradient"]["value"]) == 3
    assert max(abs(g) for row in values["gradient"]["value"] for g in row) < 1e-3
    # The optimised energy is below the start geometry's.
    start = run("xtb.run", {}, {"stdout": ["xtb.energy"]})["energy"]["value"]
    assert values["energy"]["value"] < start


def test_the_trajectory_parser_reads_the_fixture_and_drops_a_cut_off_frame():
    text = (FIXTURES / "xtb/water_md/xtb.trj").read_text()
    values = xtb_parsers.trajectory(text)
    assert len(values["frame_energies"]["value"]) == 10
    assert values["frame_energies"]["value"][0] == -5.070208197299
    cut = text[:text.rfind("H")]  # the last frame loses its last atom line
    assert len(xtb_parsers.trajectory(cut)["frame_energies"]["value"]) == 9


def test_read_xyz_coordinates_refuses_a_short_file(tmp_path):
    path = tmp_path / "x.xyz"
    path.write_text("3\n\nO 0 0 0\nH 0 0 1\n")
    assert read_xyz_coordinates(path, 3) is None
