"""Pipeline fixtures: SQL-stored datasets of small molecules and noop campaigns on them."""
from __future__ import annotations

from typing import Callable, List

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from campaigns.models import ArgSet, Campaign, Dataset, Record, Task

WATER = {"elements": ["O", "H", "H"],
         "coordinates": [[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]],
         "charge": 0, "multiplicity": 1}


def record_ids(count: int) -> List[str]:
    return [f"mol-{number:06d}" for number in range(count)]


@pytest.fixture
def make_dataset(db) -> Callable[..., Dataset]:
    """make_dataset(name, count) -> a SQL dataset of `count` water molecules mol-000000...,
    each with an extra input field `tag` (its number) and `note`."""
    def make(name: str = "waters", count: int = 5) -> Dataset:
        dataset = Dataset.objects.create(name=name)
        Record.objects.bulk_create(
            [Record(dataset=dataset, record_id=record_id,
                    input={**WATER, "tag": number, "note": "x" * 10})
             for number, record_id in enumerate(record_ids(count))],
            batch_size=5000)
        return dataset
    return make


@pytest.fixture
def make_campaign(make_dataset) -> Callable[..., Campaign]:
    """make_campaign(name, records=5, queue="pipe", priority="normal", **fields) -> a draft noop
    campaign with one arg set, on a fresh dataset of `records` molecules (or `dataset=`)."""
    def make(name: str = "noop_demo", records: int = 5, dataset: Dataset | None = None,
             **fields) -> Campaign:
        fields = {"function": "noop", "output_key": "out", "queue": "pipe",
                  "priority": "normal", "job_timeout": 300, **fields}
        campaign = Campaign.objects.create(
            name=name, dataset=dataset or make_dataset(f"{name}-records", records), **fields)
        ArgSet.objects.create(campaign=campaign, name="a", parameters={}, position=0)
        return campaign
    return make


@pytest.fixture
def portal_redis(redis_conn, redis_server, settings) -> Redis:
    """The test Redis, also as the portal's settings.REDIS_URL (for commands and the admin)."""
    settings.REDIS_URL = redis_server.url
    return redis_conn


def rq_queue(connection: Redis, name: str = "pipe:normal") -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def task_states(campaign: Campaign) -> dict:
    """{state: count} of the campaign's tasks."""
    states: dict = {}
    for state in campaign.tasks.values_list("state", flat=True):
        states[state] = states.get(state, 0) + 1
    return states


def queued_ids(connection: Redis, name: str = "pipe:normal") -> List[str]:
    return rq_queue(connection, name).get_job_ids()


def first_job_ids(campaign: Campaign, count: int) -> List[str]:
    return list(Task.objects.filter(campaign=campaign).order_by("pk")
                .values_list("job_id", flat=True)[:count])
