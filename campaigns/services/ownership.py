"""What a user may see and change: their own datasets and campaigns (staff: everyone's).

The API filters every queryset through these, so another user's object is simply not found
(404), never "forbidden": its existence is not revealed.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Dataset

CHANGEABLE_STATES = (Campaign.State.DRAFT,)


class NotChangeable(ApplicationError):
    """A campaign that has left draft: its definition and its existence are history now."""


def datasets_visible(*, user) -> QuerySet[Dataset]:
    """The datasets `user` may see and change: their own, or every one for staff."""
    datasets = Dataset.objects.order_by("name")
    return datasets if user.is_staff else datasets.filter(owner=user)


def campaigns_visible(*, user) -> QuerySet[Campaign]:
    """The campaigns `user` may see and change: their own, or every one for staff."""
    campaigns = Campaign.objects.select_related("dataset", "owner").order_by("name")
    return campaigns if user.is_staff else campaigns.filter(owner=user)


def dataset_check_visible(*, user, name: str | None) -> None:
    """ApplicationError unless `user` may use the dataset `name` (None: left to the importer)."""
    if name is None or datasets_visible(user=user).filter(name=name).exists():
        return
    known = ", ".join(datasets_visible(user=user).values_list("name", flat=True)[:20])
    raise ApplicationError(f"dataset: no dataset named {name!r} among yours "
                           f"(yours: {known or 'none yet'})")


def name_taken_message(name: str) -> str:
    """What a user hears for a name already in use, theirs or anyone's: names are unique across
    users (they are slugs in job ids and queue keys), and saying whose it is, or that it is
    someone else's, would tell one user about another's objects."""
    return f"the name {name!r} is not available; choose another"


def campaign_check_name_free(*, name: str, source: str) -> None:
    """ApplicationError (neutral, name_taken_message) if a campaign called `name` exists."""
    if Campaign.objects.filter(name=name).exists():
        raise ApplicationError(f"{source}: campaign: {name_taken_message(name)}")


def dataset_create(*, name: str, description: str = "", owner) -> Dataset:
    """A new SQL-stored dataset owned by `owner`; ApplicationError naming the bad field (a taken
    name in the neutral words of name_taken_message)."""
    dataset = Dataset(name=name, description=description, owner=owner)
    try:
        dataset.full_clean()
    except ValidationError as exc:
        errors = exc.error_dict
        if any(error.code == "unique" for error in errors.get("name", [])):
            errors["name"] = [ValidationError(name_taken_message(name))]
        raise ApplicationError("; ".join(f"{field}: {' '.join(messages)}" for field, messages
                                         in ValidationError(errors).message_dict.items())) from None
    dataset.save()
    return dataset


def campaign_check_changeable(*, campaign: Campaign) -> None:
    """NotChangeable unless the campaign is a draft: once launched, its tasks and results refer
    to its definition, so it is neither edited nor deleted (import a new campaign instead)."""
    if campaign.state not in CHANGEABLE_STATES:
        raise NotChangeable(f"campaign {campaign.name} is {campaign.state}: only a draft "
                            "campaign can be changed or deleted")


def campaign_delete(*, campaign: Campaign) -> None:
    """Delete a draft campaign with its arg sets; NotChangeable otherwise.

    One conditional DELETE: a launch that wins the race leaves the campaign in place.
    """
    campaign_check_changeable(campaign=campaign)
    deleted, _ = Campaign.objects.filter(pk=campaign.pk, state__in=CHANGEABLE_STATES).delete()
    if not deleted:
        campaign.refresh_from_db(fields=["state"])
        campaign_check_changeable(campaign=campaign)
