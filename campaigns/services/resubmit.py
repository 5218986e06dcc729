"""Giving failed tasks another go: back to pending with their attempts reset."""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Task

log = logging.getLogger(__name__)

# A paused campaign keeps its pause (the tasks run on resume); a finished one runs again.
RESUBMITTABLE_STATES = (Campaign.State.RUNNING, Campaign.State.PAUSED, Campaign.State.DONE,
                        Campaign.State.FAILED)
RESTARTED_STATES = (Campaign.State.DONE, Campaign.State.FAILED)


def campaign_resubmit_failed(*, campaign: Campaign) -> int:
    """Put the campaign's failed tasks back to pending with attempts reset; return how many.

    Their count of losses with Redis (Task.lost) is reset with their attempts.
    A done or failed campaign with tasks put back becomes running, so the feeder queues them at
    its next round (the feeder deletes the old failed job from Redis before it queues the new
    one under the same job id). The tasks keep their last error until an attempt replaces it.
    The per-minute series keeps their past failures: it is a history of completions
    (campaigns.services.rollups), and a task that fails again counts again.
    """
    campaign.refresh_from_db(fields=["state"])  # the collector may have ended it meanwhile
    if campaign.state not in RESUBMITTABLE_STATES:
        raise ApplicationError(f"campaign {campaign.name} is {campaign.state}: only a "
                               f"{', '.join(RESUBMITTABLE_STATES)} campaign can resubmit its "
                               "failed tasks")
    now = timezone.now()
    with transaction.atomic():
        count = campaign.tasks.filter(state=Task.State.FAILED).update(
            state=Task.State.PENDING, attempts=0, lost=0, finished_at=None, updated_at=now)
        if count and Campaign.objects.filter(pk=campaign.pk, state__in=RESTARTED_STATES).update(
                state=Campaign.State.RUNNING, updated_at=now):
            campaign.state = Campaign.State.RUNNING
    log.info("campaign %s: %s failed tasks back to pending", campaign.name, count)
    return count
