from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from campaigns.models import Dataset, Record


def count(*args: str) -> str:
    out = StringIO()
    call_command("count_records", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def computed(db):
    dataset = Dataset.objects.create(name="computed")
    Record.objects.bulk_create([
        Record(dataset=dataset, record_id="a", input={"charge": 0},
               results={"wb97mv": {"wb97md3bj": {"energy": -1.0}}}),
        Record(dataset=dataset, record_id="b", input={"charge": 1},
               results={"wb97mv": {"wb97md3bj": None}}),
        Record(dataset=dataset, record_id="c", input={"charge": 0}, results={}),
    ])
    Dataset.objects.create(name="other")
    Record.objects.create(dataset=Dataset.objects.get(name="other"), record_id="a")
    return dataset


def test_it_counts_all_records_by_default(computed):
    assert count("computed") == "3\n"


def test_it_counts_what_the_query_selects(computed):
    assert count("computed", "--query", '{"wb97mv.wb97md3bj": null}') == "2\n"
    assert count("computed", "--query", '{"input.charge": 0, "wb97mv.wb97md3bj.energy": '
                                        '{"$lt": 0}}') == "1\n"


def test_bad_json_is_an_error_with_the_message(computed):
    with pytest.raises(CommandError) as caught:
        count("computed", "--query", "{wb97mv: null}")
    assert str(caught.value) == ("--query is not JSON: Expecting property name enclosed in "
                                 "double quotes: line 1 column 2 (char 1)")


def test_a_bad_query_is_an_error_with_the_message(computed):
    with pytest.raises(CommandError) as caught:
        count("computed", "--query", '{"name": {"$regex": "^a"}}')
    assert str(caught.value).startswith("unsupported operator '$regex' at 'name' (supported: ")


def test_a_missing_dataset_lists_the_existing_ones(computed):
    with pytest.raises(CommandError) as caught:
        count("nope")
    assert str(caught.value) == "no dataset 'nope' (existing: computed, other)"
