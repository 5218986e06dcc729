"""Results export through the API: JSON Lines and extended XYZ, units, pages, left-out records."""
from __future__ import annotations

import io
import json

import ase.io
import pytest

from campaigns.models import ArgSet
from campaigns.stores import ResultUpdate, store_for

pytestmark = pytest.mark.django_db

EV = 27.211386245988
EV_PER_ANGSTROM = EV / 0.529177210903
GRADIENT = [[0.01, 0.02, -0.03], [-0.005, 0.0, 0.004], [0.0, -0.02, 0.026]]


def result(energy: float) -> dict:
    return {"energy": {"value": energy, "unit": "Eh"},
            "gradient": {"value": GRADIENT, "unit": "Eh/bohr"},
            "dipole": {"value": [0.0, 0.0, 0.73], "unit": "e·bohr"}}


@pytest.fixture
def finished(owned_campaign):
    """Campaign xtb_demo on 6 waters: mol-000000..2 have result out.a, mol-000004 only out.b,
    mol-000005 an energy without gradient; mol-000003 has none."""
    campaign = owned_campaign(name="xtb_demo", records=6, state="done")
    ArgSet.objects.create(campaign=campaign, name="b", position=1)
    updates = [ResultUpdate(f"mol-00000{n}", "out", "a", result(-76.0 - n)) for n in range(3)]
    updates += [ResultUpdate("mol-000004", "out", "b", result(-5.0)),
                ResultUpdate("mol-000005", "out", "a", {"energy": {"value": -1.5, "unit": "Eh"}})]
    store_for(campaign.dataset).write_results(updates=updates)
    return campaign


def lines(response) -> list[dict]:
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def test_jsonl_has_energy_and_forces_in_atomic_units(api, finished):
    response = api.get("/api/campaigns/xtb_demo/results/jsonl/?units=au")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    records = lines(response)
    assert [r["id"] for r in records] == ["mol-000000", "mol-000001", "mol-000002", "mol-000005"]
    first = records[0]
    assert first["energy"] == -76.0
    assert first["forces"] == [[-g for g in row] for row in GRADIENT]
    assert first["units"] == {"coordinates": "Ang", "energy": "Eh", "forces": "Eh/bohr",
                              "atomic_charges": "e"}
    assert (first["elements"], first["charge"], first["multiplicity"]) == (["O", "H", "H"], 0, 1)
    assert first["results"]["dipole"] == {"value": [0.0, 0.0, 0.73], "unit": "e·bohr"}
    assert first["extra"] == {"tag": 0, "note": "x" * 10}
    assert "forces" not in records[3]
    assert response["X-Records-Without-Result"] == "2"
    assert (response["X-Arg-Set"], response["X-Units"]) == ("a", "au")
    assert "Link" not in response


def test_units_ev_converts_energy_and_forces(api, finished):
    first = lines(api.get("/api/campaigns/xtb_demo/results/jsonl/?units=ev"))[0]
    assert first["energy"] == pytest.approx(-76.0 * EV, rel=1e-15)
    assert first["forces"][0][2] == pytest.approx(0.03 * EV_PER_ANGSTROM, rel=1e-15)
    assert first["units"] == {"coordinates": "Ang", "energy": "eV", "forces": "eV/Ang",
                              "atomic_charges": "e"}


def test_ev_is_the_default(api, finished):
    response = api.get("/api/campaigns/xtb_demo/results/jsonl/")
    assert response["X-Units"] == "ev"
    assert lines(response)[0]["energy"] == pytest.approx(-76.0 * EV, rel=1e-15)


def test_extxyz_reads_back_with_ase_with_units_named(api, finished):
    response = api.get("/api/campaigns/xtb_demo/results/extxyz/?units=ev")
    assert response["Content-Type"] == "chemical/x-extxyz; charset=utf-8"
    text = b"".join(response.streaming_content).decode()
    frames = ase.io.read(io.StringIO(text), index=":", format="extxyz")
    assert len(frames) == 4
    water = frames[1]
    assert water.get_chemical_symbols() == ["O", "H", "H"]
    assert water.get_potential_energy() == pytest.approx(-77.0 * EV, rel=1e-15)
    # ase.io.write prints coordinates and forces to 8 decimals (1e-8 Å, 1e-8 eV/Å), energies whole.
    assert water.get_forces()[0].tolist() == pytest.approx(
        [-g * EV_PER_ANGSTROM for g in GRADIENT[0]], rel=0, abs=1e-8)
    assert water.positions[1].tolist() == pytest.approx([0.0, 0.757, -0.467])
    assert (water.info["energy_unit"], water.info["forces_unit"]) == ("eV", "eV/Ang")
    assert water.info["id"] == "mol-000001"
    assert text.splitlines()[1].startswith("Properties=species:S:1:pos:R:3:forces:R:3 charge=0 ")
    assert (water.info["charge"], water.info["multiplicity"]) == (0, 1)


def test_extxyz_in_atomic_units_names_them(api, finished):
    text = b"".join(api.get("/api/campaigns/xtb_demo/results/extxyz/?units=au")
                    .streaming_content).decode()
    comment = text.splitlines()[1]
    assert "energy=-76.0 " in comment
    assert "energy_unit=Eh forces_unit=Eh/bohr" in comment


def test_another_arg_set_is_chosen_by_name(api, finished):
    response = api.get("/api/campaigns/xtb_demo/results/jsonl/?arg_set=b")
    assert [r["id"] for r in lines(response)] == ["mol-000004"]
    assert response["X-Records-Without-Result"] == "5"


def test_pages_follow_the_link_header(api, finished):
    first = api.get("/api/campaigns/xtb_demo/results/jsonl/?limit=2")
    assert [r["id"] for r in lines(first)] == ["mol-000000", "mol-000001"]
    assert first["X-Records-Without-Result"] == "0"
    link = first["Link"]
    assert link.endswith('>; rel="next"') and "after=mol-000001" in link
    second = api.get(link[1:link.index(">")])
    assert [r["id"] for r in lines(second)] == ["mol-000002", "mol-000005"]
    assert second["X-Records-Without-Result"] == "2"
    assert "Link" not in second


@pytest.mark.parametrize("query, message", [
    ("?arg_set=c", "campaign xtb_demo has no arg set 'c' (its arg sets: a, b)"),
    ("?units=si", 'units: "si" is not a valid choice.'),
    ("?limit=0", "limit must be a whole number from 1 to 100000 (got '0')"),
])
def test_bad_export_queries_are_400(api, finished, query, message):
    response = api.get(f"/api/campaigns/xtb_demo/results/extxyz/{query}",
                       HTTP_ACCEPT="chemical/x-extxyz")
    assert (response.status_code, response.json()) == (400, {"error": message})
