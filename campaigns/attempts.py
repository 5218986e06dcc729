"""Attempt ids: which delivery of a task a job (and its result) belongs to.

Every time the feeder puts a task's job in Redis it counts one more delivery on the ledger row
(`Task.delivery`) and hands the job an attempt id made of that number and an HMAC of the job id
and the number under the portal's secret key. The worker echoes the id in its result envelope;
the collector applies an envelope only to the delivery the ledger is on, so a replayed, stale or
duplicated envelope never counts twice, and a node that only knows a job id cannot make up the
id of a delivery it was never handed.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Callable

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

SALT = "htportal.attempt"
DIGEST_CHARS = 16


class BadAttempt(ValueError):
    """An attempt id that is malformed or was not made by this portal for that job."""


def attempt_id(*, job_id: str, delivery: int) -> str:
    """`"3-1f0c9a7b2d4e6f80"`: delivery 3 of job `job_id`."""
    digest = salted_hmac(SALT, f"{job_id}:{delivery}", algorithm="sha256").hexdigest()
    return f"{delivery}-{digest[:DIGEST_CHARS]}"


def attempt_id_maker() -> Callable[[str, int], str]:
    """attempt_id as a function (job id, delivery) for many ids at once: the salted key is
    derived once, not once per id (the feeder makes 5,000 a batch). Same ids as attempt_id."""
    key = hashlib.sha256(SALT.encode() + settings.SECRET_KEY.encode()).digest()

    def make(job_id: str, delivery: int) -> str:
        digest = hmac.digest(key, f"{job_id}:{delivery}".encode(), "sha256").hex()
        return f"{delivery}-{digest[:DIGEST_CHARS]}"
    return make


def attempt_delivery(*, job_id: str, attempt: object) -> int:
    """The delivery number an attempt id names; BadAttempt when it is not one of ours."""
    if not isinstance(attempt, str) or len(attempt) > 40:
        raise BadAttempt(f"attempt id {str(attempt)[:40]!r} is not a string of ours")
    number, _, digest = attempt.partition("-")
    if not number.isdigit() or len(number) > 9 or len(digest) != DIGEST_CHARS:
        raise BadAttempt(f"attempt id {attempt!r} is malformed")
    delivery = int(number)
    if not constant_time_compare(attempt, attempt_id(job_id=job_id, delivery=delivery)):
        raise BadAttempt(f"attempt id {attempt!r} was not issued for job {job_id}")
    return delivery
