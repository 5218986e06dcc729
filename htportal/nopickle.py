"""No pickle in the portal: every RQ queue Django knows reads and writes JSON.

Anyone holding the Redis URL (every worker node has it) can write a job hash whose `data` or
`meta` is a pickle. rq unpickles those fields whenever a Job is built without a serializer, and
django-rq builds some that way: `get_queue_by_index` (every queue page of the admin's RQ
dashboard) reads the serializer from RQ_QUEUES[name]["SERIALIZER"] only, never from
settings.RQ; "delete all failed jobs", the cron views and a worker's current job pass none at
all. So two things hold in every portal process (htportal.apps runs them at start-up):

- `check_rq_queues` refuses to start unless every RQ_QUEUES entry names JSON_SERIALIZER (as does
  settings.RQ), so the pages that do read the setting use JSON;
- `forbid_pickle` makes rq's DefaultSerializer, which every path without a serializer falls back
  to, the JSON serializer too, so no code path left in rq or django-rq can unpickle.
"""
from __future__ import annotations

from typing import Any, Mapping

from django.core.exceptions import ImproperlyConfigured
from rq import serializers

JSON_SERIALIZER = "rq.serializers.JSONSerializer"


def check_rq_queues(*, queues: Mapping[str, Mapping[str, Any]], rq: Mapping[str, Any]) -> None:
    """ImproperlyConfigured naming the first queue (or RQ) whose SERIALIZER is not JSON."""
    places = [(f"RQ_QUEUES[{name!r}]", config) for name, config in sorted(queues.items())]
    for place, config in [*places, ("RQ", rq)]:
        serializer = config.get("SERIALIZER")
        if serializer not in (JSON_SERIALIZER, serializers.JSONSerializer):
            raise ImproperlyConfigured(
                f"{place}['SERIALIZER'] is {serializer!r}: every queue must use "
                f"{JSON_SERIALIZER!r} (anything else falls back to pickle, which would run code "
                "that anyone with the Redis URL can write)")


def forbid_pickle() -> None:
    """Make rq's default serializer (pickle) the JSON serializer in this process."""
    serializers.DefaultSerializer.dumps = staticmethod(serializers.JSONSerializer.dumps)
    serializers.DefaultSerializer.loads = staticmethod(serializers.JSONSerializer.loads)


def pickle_forbidden() -> bool:
    """True once forbid_pickle has run: the default serializer no longer unpickles."""
    return serializers.DefaultSerializer.loads is serializers.JSONSerializer.loads
