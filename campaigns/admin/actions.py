"""Admin actions for a campaign's life cycle: thin doors onto campaigns.services.lifecycle."""
from __future__ import annotations

from typing import Callable

from django.contrib import admin, messages

from campaigns.errors import ApplicationError
from campaigns.models import Campaign
from campaigns.services.lifecycle import (campaign_cancel, campaign_launch,
                                          campaign_new_version, campaign_pause, campaign_resume)


def _each(modeladmin, request, queryset, act: Callable[[Campaign], str]) -> None:
    """Run `act` on every selected campaign; one message each, an error one for a refusal."""
    for campaign in queryset.select_related("dataset"):
        try:
            modeladmin.message_user(request, act(campaign), messages.SUCCESS)
        except ApplicationError as exc:
            modeladmin.message_user(request, str(exc), messages.ERROR)


@admin.action(description="Launch: submit the selected records and start feeding",
              permissions=["change"])
def launch(modeladmin, request, queryset):
    _each(modeladmin, request, queryset,
          lambda campaign: campaign_launch(campaign=campaign).line())


@admin.action(description="Pause: stop feeding (queued jobs still run)", permissions=["change"])
def pause(modeladmin, request, queryset):
    def act(campaign: Campaign) -> str:
        campaign_pause(campaign=campaign)
        return f"{campaign.name}: paused; jobs already in Redis still run"
    _each(modeladmin, request, queryset, act)


@admin.action(description="Resume: feed paused campaigns again", permissions=["change"])
def resume(modeladmin, request, queryset):
    def act(campaign: Campaign) -> str:
        queued = campaign_resume(campaign=campaign)
        return f"{campaign.name}: running again, {queued:,} jobs queued"
    _each(modeladmin, request, queryset, act)


@admin.action(description="Cancel: remove queued jobs from Redis and cancel unfinished tasks",
              permissions=["change"])
def cancel(modeladmin, request, queryset):
    _each(modeladmin, request, queryset,
          lambda campaign: campaign_cancel(campaign=campaign).line(campaign))


@admin.action(description="New version: back to draft as the next version, to edit its "
                          "definition (done, failed or cancelled; its ledger goes, results stay)",
              permissions=["change"])
def new_version(modeladmin, request, queryset):
    def act(campaign: Campaign) -> str:
        campaign_new_version(campaign=campaign)
        return (f"{campaign.name}: version {campaign.spec_version}, a draft; edit it, then "
                "launch it")
    _each(modeladmin, request, queryset, act)


LIFECYCLE_ACTIONS = [launch, pause, resume, cancel, new_version]
