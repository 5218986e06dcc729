"""Sampling MD frames into a dataset, then single points on the samples, then the training set:
the ANI-1x-style loop on real xtb runs (the worker runtime in this process, the store, the
sampler and the exports as the collector and the API use them)."""
from __future__ import annotations

import io
import math
import shutil
import subprocess

import ase.io
import h5py
import numpy as np
import pytest
from django.core.management import call_command

from campaigns.models import ArgSet, Campaign, Dataset
from campaigns.services.definition_schema import check_parameters
from campaigns.errors import DefinitionError
from campaigns.services.exports import results_export
from campaigns.services.sampling import (SampleRule, frames_select, kabsch_rmsd, sample_rules,
                                         samples_insert)
from campaigns.stores import ResultUpdate, store_for
from workers.runtime import execute

pytestmark = pytest.mark.django_db
EV = 27.211386245988
EV_PER_ANGSTROM = EV / 0.529177210903


def test_every_nth_skips_the_start_frame():
    frames = [[[0.0, 0.0, float(i)]] * 3 for i in range(10)]
    assert frames_select(energies=[0.0] * 10, frames=frames, rule=SampleRule("x", every=3)) == [
        3, 6, 9]


def test_the_energy_window_drops_hot_frames():
    energies = [-1.0, -1.0, -1.0 + 0.4 / EV, -1.0 + 0.6 / EV]
    frames = [[[0.0, 0.0, float(i)]] * 3 for i in range(4)]
    rule = SampleRule("x", energy_window_ev=0.5)
    assert frames_select(energies=energies, frames=frames, rule=rule) == [1, 2]


def test_rmsd_pruning_drops_a_rotated_copy():
    base = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.5, 0.0]]
    rotated = [[-y, x, z] for x, y, z in base]  # the same geometry turned by 90°
    moved = [[0.0, 0.0, 0.0], [1.3, 0.0, 0.0], [0.0, 1.5, 0.4]]
    assert kabsch_rmsd(base, rotated) == pytest.approx(0.0, abs=1e-9)
    rule = SampleRule("x", rmsd_min=0.05)
    assert frames_select(energies=[0.0] * 4, frames=[base, base, rotated, moved],
                         rule=rule) == [1, 3]


def test_max_per_record_spreads_the_frames():
    frames = [[[0.0, 0.0, float(i)]] * 3 for i in range(101)]
    assert frames_select(energies=[0.0] * 101, frames=frames,
                         rule=SampleRule("x", max_per_record=4)) == [1, 26, 51, 76]


@pytest.mark.parametrize("sample, problem", [
    ({"every": 2}, "sample must be a mapping with 'into'"),
    ({"into": "x", "evry": 2}, "unknown key 'evry'"),
    ({"into": "x", "every": 0}, "every must be a whole number of at least 1"),
    ({"into": "x", "rmsd_min": float("nan")}, "rmsd_min must be a number of at least 0"),
])
def test_a_bad_sample_rule_is_refused_at_definition(sample, problem):
    with pytest.raises(DefinitionError, match=problem):
        check_parameters("xtb.md", {"sample": sample})


def run_task(function: str, record: dict, parameters: dict, parsers: dict) -> dict:
    spec = {"function": function, "job_timeout": 300,
            "arg_sets": [{"name": "a", "parameters": parameters, "parsers": parsers}]}
    outcome = execute.execute(function=function, record=record, spec=spec)["arg_sets"]["a"]
    assert outcome["status"] == "ok", outcome["error"]
    return outcome["values"]


def direct_xtb(tmp_path, elements, coordinates, name):
    """Energy (Eh) and gradient (Eh/bohr) of a direct `xtb --grad` run on these coordinates."""
    folder = tmp_path / name
    folder.mkdir()
    lines = [str(len(elements)), ""] + [f"{e} {x:.10f} {y:.10f} {z:.10f}"
                                        for e, (x, y, z) in zip(elements, coordinates)]
    (folder / "m.xyz").write_text("\n".join(lines) + "\n")
    subprocess.run(["xtb", "m.xyz", "--gfn", "2", "--grad"], cwd=folder, check=True,
                   capture_output=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                             "OMP_STACKSIZE": "500M"}, timeout=120)
    text = (folder / "gradient").read_text().splitlines()
    energy = float(text[1].split("SCF energy =")[1].split()[0])
    gradient = [[float(v.replace("D", "E")) for v in row.split()]
                for row in text[2 + len(elements):2 + 2 * len(elements)]]
    return energy, gradient


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xtb") is None, reason="bin/install installs xtb")
def test_md_samples_then_single_points_then_a_training_set_equal_to_direct_xtb(tmp_path):
    call_command("load_demo", verbosity=0)
    demo = Dataset.objects.get(name="demo")
    parents = store_for(demo).select(query={}, limit=2)
    md = Campaign.objects.create(name="md_demo", dataset=demo, function="xtb.md",
                                 output_key="md", queue="xtb")
    ArgSet.objects.create(campaign=md, name="gfn2_300k", parameters={
        "time": 0.2, "step": 2, "dump": 20,
        "sample": {"into": "demo-md", "every": 3, "max_per_record": 2}})
    rules = sample_rules(campaign=md)
    assert set(rules) == {"gfn2_300k"}
    updates = []
    for record in parents:
        values = run_task("xtb.md", record, {"time": 0.2, "step": 2, "dump": 20},
                          {"xtb.trj": ["xtb.trajectory"]})
        updates.append(ResultUpdate(record["id"], "md", "gfn2_300k", values))
    store_for(demo).write_results(updates=updates)
    assert samples_insert(campaign=md, updates=updates) == 4
    assert samples_insert(campaign=md, updates=updates) == 0  # collected again: nothing twice

    samples = Dataset.objects.get(name="demo-md")
    assert samples.record_count == 4
    chosen = store_for(samples).select(query={"input.provenance.campaign": "md_demo"}, limit=10)
    assert [r["input"]["provenance"]["frame"] for r in chosen] == [3, 6, 3, 6]
    assert chosen[0]["id"] == f"{parents[0]['id']}.md_demo.gfn2_300k.f00003"
    trajectory = dict(zip([u.record_id for u in updates], updates))[parents[0]["id"]].value
    assert chosen[0]["input"]["coordinates"] == trajectory["frame_coordinates"]["value"][3]

    sp = Campaign.objects.create(name="sp_demo", dataset=samples, function="xtb.run",
                                 output_key="xtb", queue="xtb")
    ArgSet.objects.create(campaign=sp, name="gfn2", parameters={"task": "grad"})
    store_for(samples).write_results(updates=[
        ResultUpdate(r["id"], "xtb", "gfn2", run_task(
            "xtb.run", r, {"task": "grad"},
            {"stdout": ["xtb.energy"], "gradient": ["xtb.gradient"]}))
        for r in chosen])

    text = "".join(results_export(campaign=sp, format="extxyz").chunks())
    frames = ase.io.read(io.StringIO(text), index=":", format="extxyz")
    path = tmp_path / "train.h5"
    results_export(campaign=sp, format="hdf5").write_hdf5(path=str(path))
    with h5py.File(path, "r") as h5:
        energies = {}
        for group in h5.values():
            for rid, energy in zip(group["id"][:], group["energy"][:]):
                energies[rid.decode()] = energy
    assert len(frames) == 4 and len(energies) == 4
    for index, frame in enumerate(frames):
        energy, gradient = direct_xtb(tmp_path, frame.get_chemical_symbols(),
                                      frame.positions.tolist(), f"f{index}")
        # The exported geometry is written to 1e-8 Å: xtb on it agrees to far better than
        # any training target needs.
        assert frame.get_potential_energy() == pytest.approx(energy * EV, abs=1e-5)
        assert energies[frame.info["id"]] == pytest.approx(energy * EV, abs=1e-5)
        forces = -np.array(gradient) * EV_PER_ANGSTROM
        assert np.abs(frame.get_forces() - forces).max() < 1e-4
        assert math.isfinite(frame.get_potential_energy())
