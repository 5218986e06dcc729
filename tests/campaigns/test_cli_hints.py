"""The small things a new user trips over: a query path without `input.`, a value path that
stops at its {value, unit} object, a missing dataset on import; and docs/query.md's examples,
run as written against a dataset with real-shaped results."""
from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from campaigns.stores import ResultUpdate, store_for
from tests.pipeline.conftest import make_dataset  # noqa: F401

pytestmark = pytest.mark.django_db
DOCS = Path(__file__).resolve().parents[2] / "docs" / "query.md"


def count(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("count_records", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue().strip()


@pytest.fixture
def computed(make_dataset):
    dataset = make_dataset("demo", 3)
    store_for(dataset).write_results(updates=[
        ResultUpdate(f"mol-00000{n}", "xtb", "gfn2",
                     {"energy": {"value": -35.0 - n, "unit": "Eh"}}) for n in range(2)])
    return dataset


def test_a_path_without_input_gets_the_hint(computed):
    assert count("demo", "--query", '{"charge": 0}') == (
        "0", "hint: 'charge' is a result path; the record's input field is 'input.charge'")
    assert count("demo", "--query", '{"input.charge": 0}') == ("3", "")


def test_a_value_spelled_as_in_other_tools_gets_the_stored_path(computed):
    assert count("demo", "--query", '{"xtb.gfn2.energy_Eh": {"$lt": -30}}') == (
        "0", "hint: 'xtb.gfn2.energy_Eh' is not stored; values are {value, unit} objects: "
             "'xtb.gfn2.energy.value'")
    assert count("demo", "--query", '{"xtb.gfn2.energy": {"$lt": -30}}')[1] == (
        "hint: 'xtb.gfn2.energy' is a {value, unit} object; compare 'xtb.gfn2.energy.value'")
    assert count("demo", "--query", '{"xtb.gfn2.energy.value": {"$lt": -30}}') == ("2", "")


def test_import_into_a_missing_dataset_suggests_create(tmp_path):
    path = tmp_path / "m.xyz"
    path.write_text("1\n\nHe 0 0 0\n")
    with pytest.raises(CommandError, match=r"no dataset 'nope' .*; give --create to make it"):
        call_command("import_records", "nope", str(path), stdout=StringIO(), stderr=StringIO())


def doc_examples() -> list[str]:
    """Every `--query '...'` in docs/query.md, and every inline `{...}` after 'must all hold'."""
    text = DOCS.read_text()
    queries = re.findall(r"--query '([^']+)'", text)
    queries += re.findall(r"must all hold:\n`([^`]+)`", text)
    return queries


def test_the_docs_have_examples_to_run():
    assert len(doc_examples()) >= 3


@pytest.mark.parametrize("query", doc_examples())
def test_each_docs_example_runs_and_selects_what_it_says(computed, query):
    out, err = count("demo", "--query", query)
    selected = int(out)
    parsed = json.loads(query)
    if "xtb.gfn2.energy.value" in query:
        assert selected == 2  # the two records with energies between -40 and -30 Eh
    elif parsed == {"wb97mv.wb97md3bj": None}:
        assert selected == 3  # nothing computed with wB97M-V yet
    else:
        assert selected in (0, 3)
    assert "Traceback" not in err
