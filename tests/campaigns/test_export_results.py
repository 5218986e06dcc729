"""manage.py export_results: the same export as the API, to a file or stdout."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.api.conftest import alice, api, client_for, make_user, owned_campaign  # noqa: F401
from tests.api.test_results_api import EV, GRADIENT, finished  # noqa: F401
from tests.pipeline.conftest import make_campaign, make_dataset  # noqa: F401

pytestmark = pytest.mark.django_db


def export(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("export_results", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_writes_json_lines_to_stdout_and_counts_the_left_out(finished):
    out, err = export("xtb_demo", "--units", "au")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == ["mol-000000", "mol-000001", "mol-000002", "mol-000005"]
    assert records[0]["forces"][0] == [-g for g in GRADIENT[0]]
    assert err == ("wrote 4 records (out.a, units au); 2 records of dataset xtb_demo-records "
                   "have no result out.a (left out)\n")


def test_ev_is_the_default(finished):
    out, err = export("xtb_demo")
    assert json.loads(out.splitlines()[0])["energy"] == pytest.approx(-76.0 * EV, rel=1e-15)
    assert "units ev" in err


def test_it_writes_the_same_extxyz_as_the_api_to_a_file(finished, api, tmp_path):
    path = tmp_path / "train.extxyz"
    export("xtb_demo", "--format", "extxyz", "--units", "ev", "--arg-set", "a", "--output",
           str(path))
    served = api.get("/api/campaigns/xtb_demo/results/extxyz/?units=ev")
    assert path.read_text() == b"".join(served.streaming_content).decode()
    assert f"energy={-76.0 * EV!r}" in path.read_text()


@pytest.mark.parametrize("args, message", [
    (["nope"], "no campaign 'nope' (existing: xtb_demo)"),
    (["xtb_demo", "--arg-set", "z"], "campaign xtb_demo has no arg set 'z' (its arg sets: a, b)"),
])
def test_errors_are_one_line(finished, args, message):
    with pytest.raises(CommandError) as error:
        export(*args)
    assert str(error.value) == message
