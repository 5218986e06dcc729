"""Why nothing is running, in one line: no pool serves the queue, or every pool stops its
workers before the job timeout (the wb97mv example on the default local pool)."""
from __future__ import annotations

import html
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from campaigns.serving import campaign_blockers
from campaigns.services.submission import campaign_submit
from campaigns.status import campaign_status
from tests.pipeline.conftest import make_campaign, make_dataset  # noqa: F401
from workers.models import ScalerEvent, WorkerPool

pytestmark = pytest.mark.django_db

UNSERVED = ("no enabled worker pool serves queue 'orca' (enabled pools serve: xtb): add the "
            "queue to a pool in the admin, or start workers on it by hand")
TOO_SHORT = ("every pool serving queue 'orca' stops its workers before the job timeout of "
             "15,000 s (local: --max-runtime 14,400 s): each worker would put the job back and "
             "quit; raise a pool's max runtime or lower the job timeout")


@pytest.fixture
def local_pool(db):
    # As setup_local_pool makes it: serves xtb, workers leave after 4 h (14,400 s).
    return WorkerPool.objects.create(name="local", kind=WorkerPool.Kind.LOCAL, queues="xtb",
                                     max_runtime=14_400)


def orca_campaign(make_campaign, **fields):
    campaign = make_campaign(name="wb97mv", queue="orca", function="noop", **fields)
    campaign_submit(campaign=campaign)
    campaign.refresh_from_db()
    return campaign


def test_a_queue_no_pool_serves_is_said_in_one_line(make_campaign, local_pool, redis_conn):
    campaign = orca_campaign(make_campaign)
    assert campaign_blockers(campaign=campaign) == [UNSERVED]
    status = campaign_status(campaign=campaign, connection=redis_conn)
    assert f"  not running: {UNSERVED}" in status.lines()


def test_a_job_timeout_over_every_pools_max_runtime_is_said(make_campaign, local_pool,
                                                            redis_conn):
    local_pool.queues = "xtb orca"
    local_pool.save()
    campaign = orca_campaign(make_campaign, job_timeout=15_000)
    assert campaign_blockers(campaign=campaign) == [TOO_SHORT]
    local_pool.max_runtime = 86_400
    local_pool.save()
    assert campaign_blockers(campaign=campaign) == []


def test_a_scaler_backing_off_says_why(make_campaign, local_pool):
    local_pool.queues = "orca"
    local_pool.consecutive_failures = 3
    local_pool.next_try_at = timezone.now() + timedelta(minutes=5)
    local_pool.save()
    ScalerEvent.objects.create(pool=local_pool, kind="error", message="ssh: connection refused")
    campaign = orca_campaign(make_campaign)
    [line] = campaign_blockers(campaign=campaign)
    assert line.startswith("pool local: the scaler is backing off after 3 failed steps, until ")
    assert line.endswith("(last error: ssh: connection refused)")


def test_campaign_status_and_submit_print_the_reason(make_campaign, local_pool, portal_redis):
    campaign = make_campaign(name="wb97mv", queue="orca", function="noop")
    err = io.StringIO()
    call_command("submit", "wb97mv", stdout=io.StringIO(), stderr=err)
    assert f"warning: not running: {UNSERVED}" in err.getvalue()
    out = io.StringIO()
    call_command("campaign_status", "wb97mv", stdout=out)
    assert f"  not running: {UNSERVED}" in out.getvalue().splitlines()


def test_the_campaign_page_shows_the_reason(make_campaign, local_pool, portal_redis, client,
                                            django_user_model):
    user = django_user_model.objects.create_superuser("root", password="pw")
    campaign = orca_campaign(make_campaign)
    client.force_login(user)
    page = html.unescape(client.get(f"/dashboard/campaigns/{campaign.pk}/").content.decode())
    partial = html.unescape(
        client.get(f"/dashboard/campaigns/{campaign.pk}/status/").content.decode())
    assert f"Not running: {UNSERVED}" in page + partial
