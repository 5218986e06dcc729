"""Submitting: one task per selected record, deterministic job ids, nothing twice, the command."""
from __future__ import annotations

import functools
import hashlib
import io
import json

import pytest
from django.core.management import CommandError, call_command

from campaigns.errors import ApplicationError
from campaigns.management.commands import submit as submit_command
from campaigns.models import Campaign, Record, Task
from campaigns.pipeline_keys import campaign_spec_key, job_id, worker_rq_queues
from campaigns.progress import Progress
from campaigns.services.specs import campaign_spec, campaign_spec_publish
from campaigns.services.submission import campaign_submit
from tests.pipeline.conftest import queued_ids, record_ids, task_states


def run_submit(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("submit", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_job_ids_follow_docs_pipeline():
    digest = hashlib.sha1(b"mol-000001").hexdigest()[:24]
    assert job_id(campaign_id=12, spec_version=3, record_id="mol-000001") == f"c12-v3-{digest}"
    assert worker_rq_queues(queue="xtb") == ["xtb:high", "xtb:normal", "xtb:low"]


def test_it_adds_one_pending_task_per_selected_record_with_its_job_id(make_campaign):
    campaign = make_campaign(records=6, query={"input.tag": {"$lt": 4}})
    report = campaign_submit(campaign=campaign)
    assert (report.selected, report.added, report.already) == (4, 4, 0)
    tasks = list(campaign.tasks.order_by("record_id").values_list("record_id", "job_id", "state"))
    assert tasks == [(record_id, job_id(campaign_id=campaign.pk, spec_version=1,
                                        record_id=record_id), "pending")
                     for record_id in record_ids(4)]
    campaign.refresh_from_db()
    assert campaign.state == "running"


def test_a_campaign_that_selects_nothing_is_not_started(make_campaign):
    campaign = make_campaign(records=3, query={"input.tag": {"$gt": 10}})
    report = campaign_submit(campaign=campaign)
    assert (report.selected, report.added, report.state) == (0, 0, "draft")
    assert Campaign.objects.get(pk=campaign.pk).state == "draft"


def test_a_new_spec_version_gives_new_job_ids(make_campaign):
    campaign = make_campaign(records=1)
    campaign.spec_version = 7
    campaign_submit(campaign=campaign)
    assert campaign.tasks.get().job_id.startswith(f"c{campaign.pk}-v7-")


def test_submitting_twice_adds_nothing_and_queues_nothing_twice(make_campaign, portal_redis):
    campaign = make_campaign(records=5)
    first, _ = run_submit(campaign.name)
    assert first.strip() == (f"{campaign.name}: 5 tasks added (0 selected records already had "
                             "one), 5 jobs queued; campaign running")
    second, _ = run_submit(campaign.name)
    assert second.strip() == (f"{campaign.name}: 0 tasks added (5 selected records already had "
                              "one), 0 jobs queued; campaign running")
    assert Task.objects.count() == 5
    ids = queued_ids(portal_redis)
    assert sorted(ids) == sorted(campaign.tasks.values_list("job_id", flat=True))


def test_it_adds_only_records_that_are_new_since(make_campaign):
    campaign = make_campaign(records=3)
    campaign_submit(campaign=campaign)
    Record.objects.create(dataset=campaign.dataset, record_id="mol-new", input={})
    report = campaign_submit(campaign=campaign)
    assert (report.added, report.already) == (1, 3)
    assert campaign.tasks.filter(record_id="mol-new").exists()


def test_limit_adds_at_most_n_tasks_in_id_order(make_campaign, portal_redis):
    campaign = make_campaign(records=10)
    out, _ = run_submit(campaign.name, "--limit", "3")
    assert "3 tasks added" in out
    assert sorted(campaign.tasks.values_list("record_id", flat=True)) == record_ids(3)
    out, _ = run_submit(campaign.name, "--limit", "4")
    assert "4 tasks added (3 selected records already had one)" in out
    assert campaign.tasks.count() == 7


def test_dry_run_counts_and_writes_nothing(make_campaign, portal_redis):
    campaign = make_campaign(records=4)
    out, _ = run_submit(campaign.name, "--dry-run")
    assert out.strip() == (f"{campaign.name}: 4 tasks would be added (0 selected records already "
                           "have one); dry run, nothing written")
    campaign.refresh_from_db()
    assert (campaign.state, Task.objects.count(), portal_redis.dbsize()) == ("draft", 0, 0)


def test_progress_goes_to_stderr_for_a_large_dataset(make_campaign, portal_redis, monkeypatch):
    campaign = make_campaign(records=20_000)
    # Every update prints, so the test does not have to last the 2 s between lines.
    monkeypatch.setattr(submit_command, "Progress", functools.partial(Progress, every=0.0))
    out, err = run_submit(campaign.name, "--dry-run")
    lines = [line for line in err.splitlines() if line.startswith("submitted")]
    assert lines[0].startswith("submitted 5,000/20,000 (")
    assert lines[-1].startswith("submitted 20,000/20,000 (")
    assert "20,000 tasks would be added" in out


def test_a_large_submit_writes_20000_tasks_and_queues_one_window(make_campaign, portal_redis,
                                                                  settings):
    settings.FEED_WINDOW = 700
    campaign = make_campaign(records=20_000)
    out, _ = run_submit(campaign.name)
    assert "20,000 tasks added" in out and "700 jobs queued" in out
    assert task_states(campaign) == {"queued": 700, "pending": 19_300}
    assert Task.objects.filter(campaign=campaign).values("job_id").distinct().count() == 20_000


def test_unknown_campaign_and_refused_states_are_one_line_errors(make_campaign, portal_redis):
    make_campaign(name="xtb_demo")
    with pytest.raises(CommandError, match=r"^no campaign 'nope' \(existing: xtb_demo\)$"):
        run_submit("nope")
    Campaign.objects.filter(name="xtb_demo").update(state="paused")
    with pytest.raises(CommandError, match=(
            r"^campaign xtb_demo is paused: only a campaign that is draft, running, done, failed "
            r"can be submitted \(resume it instead\)$")):
        run_submit("xtb_demo")


def test_a_campaign_without_arg_sets_is_refused(make_campaign):
    campaign = make_campaign()
    campaign.arg_sets.all().delete()
    with pytest.raises(ApplicationError, match="has no arg sets: there is nothing to run"):
        campaign_submit(campaign=campaign)
    assert Task.objects.count() == 0


def test_the_spec_key_holds_the_spec_of_docs_runtime(make_campaign, redis_conn):
    campaign = make_campaign(function="xtb.run", job_timeout=600)
    campaign.arg_sets.all().delete()
    campaign.arg_sets.create(name="gfn2", parameters={"method": "gfn2", "task": "grad"},
                             parsers={"stdout": ["xtb.energy"], "gradient": ["xtb.gradient"]},
                             keep_files={"stdout": "{id}_gfn2.out"})
    key = campaign_spec_publish(campaign=campaign, connection=redis_conn)
    assert key == f"htportal:spec:{campaign.pk}:1" == campaign_spec_key(campaign=campaign)
    expected = {"function": "xtb.run", "job_timeout": 600, "keep_file_cap": 16777216,
                "arg_sets": [{"name": "gfn2", "parameters": {"method": "gfn2", "task": "grad"},
                              "parsers": {"stdout": ["xtb.energy"],
                                          "gradient": ["xtb.gradient"]},
                              "keep_files": {"stdout": "{id}_gfn2.out"}}]}
    assert json.loads(redis_conn.get(key)) == expected == campaign_spec(campaign=campaign)
