"""The collector puts an MD result's sampled frames into the target dataset as it writes the
result, once, in the same transaction; `sample_frames` does it again after the fact."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from campaigns.models import Dataset
from campaigns.services.collecting import results_collect
from campaigns.services.submission import campaign_submit
from campaigns.stores import store_for
from tests.pipeline.collect_helpers import arg_set_part, deliver, ok, push
from tests.pipeline.conftest import WATER, make_campaign, make_dataset  # noqa: F401

pytestmark = pytest.mark.django_db


def md_values() -> dict:
    frames = [[[x + 0.01 * i for x in row] for row in WATER["coordinates"]] for i in range(7)]
    return {"elements": {"value": ["O", "H", "H"], "unit": ""},
            "frame_energies": {"value": [-5.07 + 0.0001 * i for i in range(7)], "unit": "Eh"},
            "frame_coordinates": {"value": frames, "unit": "Ang"},
            "computed": {"program": "xtb", "charge": 0, "multiplicity": 1}}


@pytest.fixture
def md_campaign(make_campaign):
    campaign = make_campaign(name="md_demo", records=2, function="xtb.md")
    campaign.arg_sets.update(parameters={"sample": {"into": "waters-md", "every": 2}})
    campaign_submit(campaign=campaign)
    return campaign, deliver(campaign)


def md_envelope(task):
    part = {**arg_set_part(), "values": md_values()}
    return ok(task, arg_sets={"a": part})


def test_the_collector_inserts_the_sampled_frames_once(redis_conn, md_campaign):
    campaign, tasks = md_campaign
    push(redis_conn, *[md_envelope(t) for t in tasks])
    report = results_collect(connection=redis_conn)
    assert report.done == 2
    samples = Dataset.objects.get(name="waters-md")
    assert samples.record_count == 6  # frames 2, 4, 6 of each of the two records
    records = store_for(samples).select(query={"input.provenance.campaign": "md_demo"},
                                        limit=10)
    assert sorted(r["id"] for r in records)[:3] == [
        "mol-000000.md_demo.a.f00002", "mol-000000.md_demo.a.f00004",
        "mol-000000.md_demo.a.f00006"]
    assert records[0]["input"]["provenance"]["parent"] == "mol-000000"
    # A replay of the same envelopes (a collector that died before trimming) adds nothing.
    push(redis_conn, *[md_envelope(t) for t in tasks])
    results_collect(connection=redis_conn)
    samples.refresh_from_db()
    assert samples.record_count == 6


def test_sample_frames_does_it_again_from_the_stored_results(redis_conn, md_campaign):
    campaign, tasks = md_campaign
    push(redis_conn, *[md_envelope(t) for t in tasks])
    results_collect(connection=redis_conn)
    Dataset.objects.get(name="waters-md").records.all().delete()
    out = StringIO()
    call_command("sample_frames", "md_demo", stdout=out)
    assert out.getvalue().strip() == "6 sampled frames added from 2 results"
    assert Dataset.objects.get(name="waters-md").records.count() == 6


def test_samples_never_go_into_another_users_dataset(redis_conn, md_campaign, django_user_model):
    campaign, tasks = md_campaign
    other = django_user_model.objects.create_user("mallory")
    Dataset.objects.create(name="waters-md", owner=other)
    push(redis_conn, *[md_envelope(t) for t in tasks])
    assert results_collect(connection=redis_conn).done == 2  # the results are written all the same
    assert Dataset.objects.get(name="waters-md").records.count() == 0
