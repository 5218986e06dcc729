"""Campaign-side reads: nothing here writes."""
from __future__ import annotations

from typing import List, Optional

from django.db.models import QuerySet

from campaigns.models import ArgSet, Campaign, Dataset


def campaign_arg_sets(*, campaign: Campaign) -> QuerySet[ArgSet]:
    """The campaign's arg sets in the order they run."""
    return campaign.arg_sets.order_by("position", "id")


def campaign_get(*, name: str) -> Optional[Campaign]:
    return Campaign.objects.select_related("dataset").filter(name=name).first()


def campaign_names(*, limit: int) -> List[str]:
    return list(Campaign.objects.order_by("name").values_list("name", flat=True)[:limit])


def dataset_names(*, limit: int) -> List[str]:
    return list(Dataset.objects.order_by("name").values_list("name", flat=True)[:limit])


def campaign_describe(*, campaign: Campaign) -> str:
    """One line: 'campaign wb97mv (orca.sequential, 1 arg set: wb97md3bj) on dataset demo, queue orca:high'."""
    names = [arg_set.name for arg_set in campaign_arg_sets(campaign=campaign)]
    arg_sets = f"{len(names)} arg set{'' if len(names) == 1 else 's'}: {', '.join(names)}"
    return (f"campaign {campaign.name} ({campaign.function}, {arg_sets}) "
            f"on dataset {campaign.dataset.name}, queue {campaign.queue_spec}")
