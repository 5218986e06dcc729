"""Results waiting for their dataset's store (or the storage) to come back.

When a store or the storage is down for one dataset, that dataset's envelopes of the batch
move (atomically with the trim of the batch) from `htportal:results` to the dataset's own list
`htportal:results-retry:<dataset id>`, and `htportal:results-retry` (a hash, dataset id ->
JSON {"failures", "next_at", "reason"}) says when to try again: 1, 2, 4 ... 300 s after each
failure. Until then, new envelopes of that dataset go straight to its list; other datasets'
results are written as usual. Once a retry of the dataset's list succeeds, the field goes.
Their tasks stay queued or running meanwhile: nothing is counted against them.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from redis import Redis

RETRY_STATE_KEY = "htportal:results-retry"
RETRY_LIST_PREFIX = "htportal:results-retry"
RETRY_FIRST_S = 1.0
RETRY_CAP_S = 300.0


def retry_list_key(dataset_id: int) -> str:
    return f"{RETRY_LIST_PREFIX}:{dataset_id}"


@dataclass(frozen=True)
class Waiting:
    dataset_id: int
    failures: int
    next_at: float
    reason: str

    def due(self, now: float) -> bool:
        return self.next_at <= now


def retries_waiting(connection: Redis) -> dict[int, Waiting]:
    """dataset id -> its retry state, for every dataset with results waiting (a selector)."""
    waiting = {}
    for raw_id, raw in connection.hgetall(RETRY_STATE_KEY).items():
        try:
            state = json.loads(raw)
            dataset_id = int(raw_id)
            waiting[dataset_id] = Waiting(dataset_id=dataset_id,
                                          failures=int(state.get("failures", 1)),
                                          next_at=float(state.get("next_at", 0)),
                                          reason=str(state.get("reason", "")))
        except (ValueError, TypeError, AttributeError):
            connection.hdel(RETRY_STATE_KEY, raw_id)
    return waiting


def retry_schedule(*, connection: Redis, dataset_id: int, failures: int, reason: str) -> float:
    """Record one more failure of the dataset's store; return the seconds until the next try."""
    delay = min(RETRY_FIRST_S * 2 ** max(failures - 1, 0), RETRY_CAP_S)
    connection.hset(RETRY_STATE_KEY, str(dataset_id), json.dumps(
        {"failures": failures, "next_at": time.time() + delay, "reason": reason[:500]}))
    return delay


def retry_clear(*, connection: Redis, dataset_ids: set[int]) -> None:
    """The datasets' stores answered again: their lists are read like the results list (and
    the field goes back once the list is empty)."""
    dataset_ids = sorted(dataset_ids)
    if dataset_ids:
        with connection.pipeline(transaction=False) as pipe:
            for dataset_id in dataset_ids:
                pipe.llen(retry_list_key(dataset_id))
            lengths = pipe.execute()
        with connection.pipeline(transaction=False) as pipe:
            for dataset_id, length in zip(dataset_ids, lengths):
                if length:  # more waiting: due at once
                    pipe.hset(RETRY_STATE_KEY, str(dataset_id), json.dumps(
                        {"failures": 0, "next_at": 0, "reason": "catching up"}))
                else:
                    pipe.hdel(RETRY_STATE_KEY, str(dataset_id))
            pipe.execute()
