"""Admin actions beside the life cycle ones: thin doors onto campaigns.services."""
from __future__ import annotations

from django.contrib import admin, messages

from campaigns.services.cloning import campaign_clone


@admin.action(description="Clone: a draft copy (NAME-copy) with the same arg sets",
              permissions=["add"])
def clone(modeladmin, request, queryset):
    for campaign in queryset:
        copy = campaign_clone(campaign=campaign, owner=request.user)
        modeladmin.message_user(request, f"{campaign.name}: cloned as {copy.name} (draft)",
                                messages.SUCCESS)


DASHBOARD_ACTIONS = [clone]
