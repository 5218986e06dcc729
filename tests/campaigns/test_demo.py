from io import StringIO

import pytest
from django.core.management import call_command

from campaigns.models import Dataset, Record
from campaigns.record_selectors import records_count


def load_demo() -> str:
    out = StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_creates_the_demo_dataset_with_at_least_50_molecules():
    assert load_demo() == "demo: 99 added, 0 already present, 99 records\n"
    demo = Dataset.objects.get(name="demo")
    assert demo.record_count == Record.objects.filter(dataset=demo).count() == 99
    assert records_count(dataset=demo, query={"input.elements": {"$exists": True}}) == 99


@pytest.mark.django_db
def test_loading_twice_adds_nothing():
    load_demo()
    assert load_demo() == "demo: 0 added, 99 already present, 99 records\n"
    assert Record.objects.count() == 99


@pytest.mark.django_db
def test_radicals_have_the_multiplicity_of_their_magnetic_moment():
    load_demo()
    demo = Dataset.objects.get(name="demo")
    methyl = Record.objects.get(dataset=demo, record_id="g2-CH3").input
    assert (methyl["elements"], methyl["charge"], methyl["multiplicity"]) == (
        ["C", "H", "H", "H"], 0, 2)
    assert Record.objects.get(dataset=demo, record_id="g2-CH2_s3B1d").input["multiplicity"] == 3
    assert Record.objects.get(dataset=demo, record_id="g2-C6H6").input["multiplicity"] == 1
    assert records_count(dataset=demo, query={"input.multiplicity": {"$gt": 1}}) == 15  # 14 doublets, 1 triplet
