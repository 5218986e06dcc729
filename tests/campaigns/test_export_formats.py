"""Exports that training codes read as they are: extended XYZ by ase (plain and REF_ keys),
QCSchema AtomicResult validated by qcelemental's own models, HDF5 in AIMNet2's and TorchANI's
group-per-atom-count layout read back with h5py; and the labels come from what was computed."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from django.core.management import call_command
from django.db import connections
from qcelemental.models import AtomicResult

from campaigns.stores import ResultUpdate, store_for
from tests.api.conftest import alice, api, client_for, make_user, owned_campaign  # noqa: F401
from tests.pipeline.conftest import make_campaign, make_dataset  # noqa: F401

pytestmark = pytest.mark.django_db

EV = 27.211386245988
EV_PER_ANGSTROM = EV / 0.529177210903
GRADIENT = [[0.01, 0.02, -0.03], [-0.005, 0.0, 0.004], [-0.005, -0.02, 0.026]]
OPTIMISED = [[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]]
CHARGES = [-0.56, 0.28, 0.28]
ROOT = Path(__file__).resolve().parents[2]


def result(energy: float, **extra) -> dict:
    return {"energy": {"value": energy, "unit": "Eh"},
            "gradient": {"value": GRADIENT, "unit": "Eh/bohr"},
            "charges": {"value": CHARGES, "unit": "e"}, **extra}


@pytest.fixture
def exported(owned_campaign):
    """xtb campaign on 3 waters: mol-000000 computed as a doublet cation at an optimised
    geometry (its `computed` block says so), mol-000001 as stored, mol-000002 without forces."""
    campaign = owned_campaign(name="xtb_demo", records=3, state="done", function="xtb.run")
    campaign.arg_sets.update(parameters={"method": "gfn2", "task": "sp"})
    computed = {"charge": 1, "multiplicity": 2, "coordinates": OPTIMISED, "program": "xtb",
                "version": "6.5.1", "method": "GFN2-xTB", "host": "node7"}
    store_for(campaign.dataset).write_results(updates=[
        ResultUpdate("mol-000000", "out", "a", result(-75.5, computed=computed)),
        ResultUpdate("mol-000001", "out", "a", result(-76.0)),
        ResultUpdate("mol-000002", "out", "a", {"energy": {"value": -76.1, "unit": "Eh"}}),
    ])
    return campaign


def export(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("export_results", "xtb_demo", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_extxyz_labels_come_from_what_was_computed(exported):
    frames = ase.io.read(io.StringIO(export("--format", "extxyz")[0]), index=":",
                         format="extxyz")
    cation, neutral, _ = frames
    assert (cation.info["charge"], cation.info["multiplicity"]) == (1, 2)
    assert cation.positions.tolist() == OPTIMISED
    assert (neutral.info["charge"], neutral.info["multiplicity"]) == (0, 1)
    assert neutral.positions[0].tolist() == [0.0, 0.0, 0.117]
    assert cation.get_potential_energy() == pytest.approx(-75.5 * EV, rel=1e-15)
    assert cation.get_forces().ravel().tolist() == pytest.approx(
        (-np.array(GRADIENT) * EV_PER_ANGSTROM).ravel().tolist(), abs=1e-8)
    assert cation.get_charges().tolist() == pytest.approx(CHARGES)


def test_extxyz_ref_keys_are_what_mace_reads(exported):
    text = export("--format", "extxyz", "--key-prefix", "REF_")[0]
    frame = ase.io.read(io.StringIO(text), index=0, format="extxyz")
    assert frame.calc is None  # nothing an ase reader would take for a calculator's results
    assert frame.info["REF_energy"] == pytest.approx(-75.5 * EV, rel=1e-15)
    assert frame.arrays["REF_forces"][0].tolist() == pytest.approx(
        [-g * EV_PER_ANGSTROM for g in GRADIENT[0]], abs=1e-8)
    assert frame.arrays["REF_charges"].tolist() == pytest.approx(CHARGES)
    assert "REF_forces" not in text.split("\n\n")[0].splitlines()[-1]  # the frame without forces
    last = ase.io.read(io.StringIO(text), index=-1, format="extxyz")
    assert "REF_forces" not in last.arrays


def test_qcschema_lines_are_atomic_results_qcelemental_accepts(exported):
    lines = export("--format", "qcschema")[0].splitlines()
    results = [AtomicResult.parse_raw(line) for line in lines]
    cation = results[0]
    assert cation.driver == "gradient"
    assert cation.molecule.molecular_charge == 1 and cation.molecule.molecular_multiplicity == 2
    assert cation.properties.return_energy == -75.5
    assert cation.return_result.tolist() == GRADIENT
    assert (cation.model.method, cation.provenance.creator) == ("GFN2-xTB", "xtb")
    assert cation.molecule.geometry[1].tolist() == pytest.approx(
        [c / 0.529177210903 for c in OPTIMISED[1]])
    assert results[1].model.method == "gfn2-xtb"  # from the arg set when the result names none
    assert results[2].driver == "energy" and results[2].return_result == -76.1


def test_qcschema_leaves_out_an_impossible_spin_and_says_so(exported):
    store_for(exported.dataset).write_results(updates=[ResultUpdate(
        "mol-000001", "out", "a", result(-76.0, computed={"multiplicity": 2}))])
    out, err = export("--format", "qcschema")
    assert len(out.splitlines()) == 2
    assert "1 left out as the format refused them" in err


@pytest.mark.parametrize("layout, names", [
    ("aimnet2", ("coord", "numbers", "charge", "energy", "forces", "charges")),
    ("torchani", ("coordinates", "species", "charge", "energies", "forces", "charges")),
])
def test_hdf5_groups_by_atom_count_in_the_codes_layout(exported, tmp_path, layout, names):
    path = tmp_path / "train.h5"
    _, err = export("--format", "hdf5", "--hdf5-layout", layout, "--output", str(path))
    coord, numbers, charge, energy, forces, charges = names
    with h5py.File(path, "r") as h5:
        assert list(h5) == ["003"]
        group = h5["003"]
        # The frame without forces cannot share a group whose frames all have them: left out.
        assert group[coord].shape == (2, 3, 3) and group[forces].shape == (2, 3, 3)
        assert group[numbers][0].tolist() == [8, 1, 1]
        assert group[charge][:].tolist() == [1.0, 0.0]
        assert group[energy][:].tolist() == pytest.approx([-75.5 * EV, -76.0 * EV], rel=1e-15)
        assert group[forces][0].ravel().tolist() == pytest.approx(
            (-np.array(GRADIENT) * EV_PER_ANGSTROM).ravel().tolist())
        assert group[charges][1].tolist() == CHARGES
        assert group[coord][0].tolist() == OPTIMISED
        assert (group[energy].attrs["units"], group[forces].attrs["units"]) == ("eV", "eV/Ang")
        assert [i.decode() for i in group["id"][:]] == ["mol-000000", "mol-000001"]
    assert "wrote 2 records" in err and "1 left out" in err


def test_hdf5_through_the_api(exported, api):
    response = api.get("/api/campaigns/xtb_demo/results/hdf5/?units=au")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-hdf5"
    data = b"".join(response.streaming_content)
    with h5py.File(io.BytesIO(data), "r") as h5:
        assert h5["003/energy"][:].tolist() == [-75.5, -76.0]


def test_qcschema_through_the_api(exported, api):
    response = api.get("/api/campaigns/xtb_demo/results/qcschema/")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [AtomicResult.parse_raw(line).properties.return_energy for line in lines] == [
        -75.5, -76.0, -76.1]


def test_hdf5_needs_an_output_file(exported):
    with pytest.raises(Exception, match="--format hdf5 writes a file: give --output"):
        export("--format", "hdf5")


@pytest.mark.django_db(transaction=True)
def test_a_closed_pipe_ends_the_export_quietly(exported, tmp_path):
    database = connections["default"].settings_dict["NAME"]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}",
           "DJANGO_SETTINGS_MODULE": "htportal.settings"}
    run = subprocess.run(f"{sys.executable} manage.py export_results xtb_demo | head -c 10",
                         shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0
    assert len(run.stdout) == 10
    assert "Broken pipe" not in run.stderr and "Traceback" not in run.stderr
