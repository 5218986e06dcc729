"""Cloning a campaign: a new draft with the same job, selection and arg sets."""
from __future__ import annotations

from django.db import IntegrityError, router, transaction

from campaigns.models import ArgSet, Campaign
from campaigns.services import definition_schema as schema

COPY_SUFFIX = "-copy"
# Fields that belong to the original's run, not to what it computes.
# `trusted` is a staff decision about one campaign: a clone (whoever makes it) starts untrusted.
NOT_COPIED = {"id", "name", "state", "spec_version", "owner", "trusted", "created_at",
              "updated_at"}
NAME_ATTEMPTS = 5
NUMBER_ROOM = len("-9999")  # a long name is cut so that NAME-copy-N still fits


def campaign_clone(*, campaign: Campaign, owner=None) -> Campaign:
    """A draft copy named NAME-copy (then NAME-copy-2, -copy-3, ...) with copies of its arg sets.

    owner: the new campaign's owner (default: the original's).
    """
    for attempt in range(NAME_ATTEMPTS):
        try:
            with transaction.atomic(using=router.db_for_write(Campaign)):
                return _copy(campaign, name=_free_name(campaign.name), owner=owner)
        except IntegrityError:
            # Someone took the name between our look and our insert; look again.
            if attempt == NAME_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _copy(campaign: Campaign, *, name: str, owner) -> Campaign:
    fields = {field.name: getattr(campaign, field.name) for field in Campaign._meta.concrete_fields
              if field.name not in NOT_COPIED}
    clone = Campaign.objects.create(name=name, state=Campaign.State.DRAFT,
                                    owner=owner if owner is not None else campaign.owner, **fields)
    ArgSet.objects.bulk_create(
        ArgSet(campaign=clone, position=arg_set.position, name=arg_set.name,
               parameters=arg_set.parameters, parsers=arg_set.parsers,
               keep_files=arg_set.keep_files)
        for arg_set in campaign.arg_sets.order_by("position", "id"))
    return clone


def _free_name(name: str) -> str:
    """NAME-copy, or NAME-copy-N with the smallest free N >= 2; the base is cut to fit."""
    base = name[:schema.NAME_MAX_LENGTH - len(COPY_SUFFIX) - NUMBER_ROOM] + COPY_SUFFIX
    taken = set(Campaign.objects.filter(name__startswith=base).values_list("name", flat=True))
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"
