"""Names the pipeline shares with workers and the collector (docs/pipeline.md, "Keys and names").

Every Redis key and RQ queue name the portal writes is made here, so submit, feed, collect and
cancel can never disagree on one.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, List

from workers.runtime import worker as runtime_worker

if TYPE_CHECKING:
    from campaigns.models import Campaign

# In the order a worker listens: rq's dequeue_any takes from the first queue that has a job.
PRIORITIES = runtime_worker.PRIORITIES  # the worker expands a bare queue name the same way
RESULTS_KEY = "htportal:results"
SPEC_KEY_PREFIX = "htportal:spec"
FEED_LOCK_PREFIX = "htportal:feed-lock"
JOB_ID_HASH_LENGTH = 24


def rq_queue_name(*, queue: str, priority: str) -> str:
    """The RQ queue of a campaign on `queue` with `priority`: "xtb:normal"."""
    return f"{queue}:{priority}"


def campaign_rq_queue(*, campaign: Campaign) -> str:
    return rq_queue_name(queue=campaign.queue, priority=campaign.priority)


def worker_rq_queues(*, queue: str) -> List[str]:
    """The RQ queues a worker serving `queue` listens on, highest priority first."""
    return [rq_queue_name(queue=queue, priority=priority) for priority in PRIORITIES]


def spec_key(*, campaign_id: int, spec_version: int) -> str:
    """Where the spec of one campaign version lives: "htportal:spec:12:3"."""
    return f"{SPEC_KEY_PREFIX}:{campaign_id}:{spec_version}"


def campaign_spec_key(*, campaign: Campaign) -> str:
    return spec_key(campaign_id=campaign.pk, spec_version=campaign.spec_version)


def job_id(*, campaign_id: int, spec_version: int, record_id: str) -> str:
    """The deterministic job id of one record in one campaign version: "c12-v3-<24 hex>".

    A hash, not the record id itself: record ids may be long or hold characters that Redis key
    patterns and rq's registries would have to escape.
    """
    digest = hashlib.sha1(record_id.encode("utf-8")).hexdigest()[:JOB_ID_HASH_LENGTH]
    return f"c{campaign_id}-v{spec_version}-{digest}"


def campaign_job_prefix(*, campaign_id: int) -> str:
    """What the job ids of every version of one campaign start with: "c12-v"."""
    return f"c{campaign_id}-v"


def feed_lock_key(*, queue: str) -> str:
    """The lock a feeder (or a cancel) holds while it changes what `queue` has in Redis."""
    return f"{FEED_LOCK_PREFIX}:{queue}"
