"""The dashboard's pages: thin doors onto campaigns.status, the dashboard selectors and the
life-cycle services. Every page needs a login; a user sees only their own campaigns unless
staff. Live parts are htmx partials that the full pages include and refresh every few seconds.
"""
from __future__ import annotations

from typing import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from campaigns.dashboard import display, selectors
from campaigns.errors import ApplicationError
from campaigns.models import Campaign
from campaigns.redis_connection import redis_connection
from campaigns.services.lifecycle import (campaign_cancel, campaign_launch, campaign_pause,
                                          campaign_resume)
from campaigns.services.ownership import campaigns_visible
from campaigns.services.resubmit import campaign_resubmit_failed
from campaigns.status import campaign_status

CAMPAIGNS_PER_PAGE = 25


def _campaign_or_404(request: HttpRequest, pk: int) -> Campaign:
    campaign = selectors.campaign_visible(user=request.user, pk=pk)
    if campaign is None:
        raise Http404(f"no campaign with id {pk} that you may see")
    return campaign


# -- campaigns -----------------------------------------------------------------------------

def _campaigns_context(request: HttpRequest) -> dict:
    page = Paginator(campaigns_visible(user=request.user), CAMPAIGNS_PER_PAGE
                     ).get_page(request.GET.get("page"))
    connection = redis_connection()
    rows = []
    for campaign in page:
        status = campaign_status(campaign=campaign, connection=connection)
        rows.append({"campaign": campaign, "status": status, "progress": display.progress(status)})
    return {"page": page, "rows": rows}


@login_required
def campaigns(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/campaigns.html", _campaigns_context(request))


@login_required
def campaigns_partial(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/partials/campaign_rows.html", _campaigns_context(request))


# -- one campaign --------------------------------------------------------------------------

def _status_context(campaign: Campaign) -> dict:
    status = campaign_status(campaign=campaign, connection=redis_connection())
    examples = selectors.failure_examples(campaign=campaign)
    return {"campaign": campaign, "status": status, "progress": display.progress(status),
            "redis_memory": display.bytes_text(status.redis_used_memory),
            "failures": [(failure, examples.get(failure.error_class))
                         for failure in status.failures],
            "recent_failures": selectors.failures_recent(campaign=campaign)}


def _series_context(request: HttpRequest, campaign: Campaign) -> dict:
    span = request.GET.get("span", selectors.DEFAULT_SPAN)
    if span not in selectors.SERIES_SPANS:
        span = selectors.DEFAULT_SPAN
    series = selectors.campaign_series(campaign=campaign, span=span)
    return {"campaign": campaign, "series": series.as_dict(), "span": span}


@login_required
def campaign(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign_or_404(request, pk)
    context = {**_status_context(campaign), **_series_context(request, campaign),
               "actions": ACTIONS}
    return render(request, "dashboard/campaign.html", context)


@login_required
def campaign_status_partial(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign_or_404(request, pk)
    return render(request, "dashboard/partials/campaign_status.html", _status_context(campaign))


@login_required
def campaign_series_partial(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign_or_404(request, pk)
    return render(request, "dashboard/partials/campaign_series.html",
                  _series_context(request, campaign))


@login_required
def task(request: HttpRequest, pk: int, task_pk: int) -> HttpResponse:
    campaign = _campaign_or_404(request, pk)
    task = selectors.campaign_task(campaign=campaign, pk=task_pk)
    if task is None:
        raise Http404(f"campaign {campaign.name} has no task with id {task_pk}")
    return render(request, "dashboard/task.html", {"campaign": campaign, "task": task})


# -- actions: the services the admin actions and commands call -----------------------------

def _launch(campaign: Campaign) -> str:
    return campaign_launch(campaign=campaign).line()


def _pause(campaign: Campaign) -> str:
    campaign_pause(campaign=campaign)
    return f"{campaign.name}: paused; jobs already in Redis still run"


def _resume(campaign: Campaign) -> str:
    queued = campaign_resume(campaign=campaign)
    return f"{campaign.name}: running again, {queued:,} jobs queued"


def _cancel(campaign: Campaign) -> str:
    return campaign_cancel(campaign=campaign).line(campaign)


def _resubmit(campaign: Campaign) -> str:
    count = campaign_resubmit_failed(campaign=campaign)
    return f"{campaign.name}: {count:,} failed tasks back to pending"


# name -> (button label, service door); the campaign page shows them in this order.
ACTIONS: dict[str, tuple[str, Callable[[Campaign], str]]] = {
    "launch": ("Launch", _launch),
    "pause": ("Pause", _pause),
    "resume": ("Resume", _resume),
    "cancel": ("Cancel", _cancel),
    "resubmit": ("Resubmit failed", _resubmit),
}


@login_required
@require_POST
def campaign_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    campaign = _campaign_or_404(request, pk)
    if action not in ACTIONS:
        raise Http404(f"no action {action!r} (known: {', '.join(ACTIONS)})")
    try:
        messages.success(request, ACTIONS[action][1](campaign))
    except ApplicationError as exc:
        messages.error(request, str(exc))
    return redirect("dashboard:campaign", pk=campaign.pk)


# -- workers -------------------------------------------------------------------------------

def _workers_context() -> dict:
    view = selectors.workers_view(connection=redis_connection())
    memory = view.memory
    return {"view": view, "events": selectors.scaler_events_recent(),
            "memory_used": display.bytes_text(memory.used if memory else None),
            "memory_bound": display.bytes_text(memory.bound) if memory and memory.bound else ""}


def _staff_only(request: HttpRequest) -> None:
    """Pools, workers and the scaler serve every user's campaigns: staff's view only."""
    if not request.user.is_staff:
        raise Http404("the workers page is for staff")


@login_required
def workers(request: HttpRequest) -> HttpResponse:
    _staff_only(request)
    return render(request, "dashboard/workers.html", _workers_context())


@login_required
def workers_partial(request: HttpRequest) -> HttpResponse:
    _staff_only(request)
    return render(request, "dashboard/partials/workers.html", _workers_context())
