"""The scaler's record of what it did for each pool (ScalerEvent rows, shown in the admin)."""
from __future__ import annotations

import logging
from typing import Optional

from django.db.models import OuterRef, QuerySet, Subquery

from workers.models import ScalerEvent, WorkerPool

log = logging.getLogger(__name__)

MESSAGE_MAX = 2000


def event_record(*, pool: WorkerPool, kind: str, message: str,
                 details: Optional[dict] = None) -> ScalerEvent:
    """Store one event of `pool` (submit, remove, error or decision)."""
    return ScalerEvent.objects.create(pool=pool, kind=kind, message=message[:MESSAGE_MAX],
                                      details=details or {})


def pools_with_last_event(queryset: QuerySet) -> QuerySet:
    """`queryset` of pools, each annotated with last_event_kind, last_event_message and
    last_event_time (None when the pool has no event yet)."""
    last = ScalerEvent.objects.filter(pool=OuterRef("pk")).order_by("-time", "-id")
    return queryset.annotate(
        last_event_kind=Subquery(last.values("kind")[:1]),
        last_event_message=Subquery(last.values("message")[:1]),
        last_event_time=Subquery(last.values("time")[:1]),
    )
