"""Dashboard fixtures: users, campaigns with a ledger in known states, the portal's Redis."""
from __future__ import annotations

from datetime import timedelta
from typing import Callable

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from campaigns.models import ArgSet, Campaign, Dataset, Task
from campaigns.pipeline_keys import job_id
from campaigns.services.rollups import task_minutes_rebuild

PASSWORD = "dashboard-pw-1"


@pytest.fixture
def make_user(db) -> Callable[..., object]:
    """make_user(name, staff=False) -> a user whose password is PASSWORD."""
    def make(name: str, staff: bool = False):
        users = get_user_model()
        if staff:
            return users.objects.create_superuser(username=name, password=PASSWORD)
        return users.objects.create_user(username=name, password=PASSWORD)
    return make


@pytest.fixture
def owner(make_user):
    return make_user("olga")


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def portal_redis(redis_conn, redis_server, settings):
    """The test Redis as the portal's settings.REDIS_URL."""
    settings.REDIS_URL = redis_server.url
    return redis_conn


@pytest.fixture
def make_ledger(db) -> Callable[..., Campaign]:
    """make_ledger(name, owner, states={"done": 3, ...}, state="running") -> a noop campaign on
    queue "dash" whose tasks are in the given states; done and failed ones finished 30 s ago,
    failed ones with error class "ProgramFailed", a message and an output tail; the per-minute
    rollup counted from them."""
    def make(name: str, owner=None, states: dict | None = None, state: str = "running",
             **fields) -> Campaign:
        dataset, _ = Dataset.objects.get_or_create(name="dash-data")
        campaign = Campaign.objects.create(
            name=name, dataset=dataset, function="noop", output_key="out", queue="dash",
            state=state, owner=owner, **fields)
        ArgSet.objects.create(campaign=campaign, name="a", parameters={}, position=0)
        finished = timezone.now() - timedelta(seconds=30)
        tasks = []
        for task_state, count in (states or {}).items():
            for number in range(count):
                record_id = f"{task_state}-{number:04d}"
                ended = task_state in ("done", "failed")
                tasks.append(Task(
                    campaign=campaign, record_id=record_id, state=task_state,
                    job_id=job_id(campaign_id=campaign.pk, spec_version=1, record_id=record_id),
                    attempts=1 if task_state != "pending" else 0,
                    finished_at=finished if ended else None,
                    **(_failure(number) if task_state == "failed" else {})))
        Task.objects.bulk_create(tasks)
        task_minutes_rebuild(campaign_ids=[campaign.pk])  # as the collector would have
        return campaign
    return make


def _failure(number: int) -> dict:
    return {"error_class": "ProgramFailed", "error_message": f"xtb: exit code {number + 1}",
            "output_tail": f"... abnormal termination of xtb (run {number})",
            "worker": "node7.12.abc"}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's chromium: Playwright cannot download its own here (RECIPES.md §3)."""
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium"}
