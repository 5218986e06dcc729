"""The chemist's pages: a campaign's results, one record, its kept files, CPU accounting, and
the dashboard's own login page (for every user, not only staff).

Thin views over campaigns.dashboard.results_selectors and .accounting. Every view needs a
login and finds campaigns through campaigns_visible: another user's campaign, record or file
is simply not found (404), as in the API.
"""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from campaigns.dashboard import accounting, results_selectors
from campaigns.models import Campaign
from campaigns.services.exports import FORMATS
from campaigns.services.kept_files import kept_file_open
from campaigns.services.ownership import campaigns_visible, datasets_visible

DATASETS_PER_PAGE = 50
# Until settings.LOGIN_URL points at the dashboard's login page, these views name it.
LOGIN_URL = "/dashboard/login/"


class RecordIdConverter:
    """A record id in a URL: any text (ids are arbitrary strings, '/' included). reverse()
    percent-encodes what a path may not hold ('?', '#', '%', spaces, non-ASCII) and leaves '/'
    as it is; the server decodes the path before it is matched, and '.+' takes the rest of it.
    (A browser folds a whole path segment "." or ".." away: ids that are exactly such a
    segment between slashes cannot be opened from a browser.)"""

    regex = ".+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


def _login(view):
    return login_required(view, login_url=LOGIN_URL)


def _campaign_or_404(request: HttpRequest, name: str) -> Campaign:
    campaign = results_selectors.campaign_by_name(user=request.user, name=name)
    if campaign is None:
        raise Http404(f"no campaign named {name!r} that you may see")
    return campaign


class DashboardLoginView(auth_views.LoginView):
    """Any active user (staff or not) logs in here and lands on their dashboard."""

    template_name = "dashboard/login.html"
    redirect_authenticated_user = True
    next_page = "dashboard:campaigns"


def _number(text: str | None, default: float, low: float, high: float) -> float:
    try:
        value = float(text) if text not in (None, "") else default
    except ValueError:
        return default
    return min(max(value, low), high) if value == value else default


@_login
def results(request: HttpRequest, name: str) -> HttpResponse:
    campaign = _campaign_or_404(request, name)
    view = results_selectors.results_view(
        campaign=campaign, arg_set=request.GET.get("arg_set"),
        query_text=request.GET.get("q", ""), sort=request.GET.get("sort", "id"),
        after=request.GET.get("after") or None,
        page=int(_number(request.GET.get("page"), 1, 1, 10**6)),
        sigma=_number(request.GET.get("sigma"), results_selectors.DEFAULT_SIGMA, 0.5, 100))
    keep = {"arg_set": view.arg_set, "q": view.query_text, "sigma": f"{view.sigma:g}"}
    sort_param = ("-" if view.descending else "") + view.sort

    def link(**changes) -> str:
        params = {**keep, "sort": sort_param, **changes}
        return "?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})

    headers = [{"key": "id", "title": "record", "url": link(sort=_toggle(view, "id")),
                "current": view.sort == "id", "descending": view.descending}]
    for column in view.columns:
        sortable = column.key in results_selectors.SORTS
        headers.append({"key": column.key, "title": column.title,
                        "url": link(sort=_toggle(view, column.key)) if sortable else "",
                        "current": view.sort == column.key, "descending": view.descending})
    context = {
        "campaign": campaign, "view": view, "headers": headers,
        "rows": [{"row": row, "cells": row.cells(view.columns)} for row in view.rows],
        "histograms": [h.as_dict() for h in view.histograms],
        "next_url": link(after=view.next_after) if view.next_after else "",
        "first_url": link() if view.after else "",
        "previous_url": "",
        "page_next_url": link(page=view.page + 1) if view.page < view.pages else "",
        "sorted": not (view.sort == "id" and not view.descending),
        "unphysical_force": results_selectors.UNPHYSICAL_FORCE,
    }
    if context["sorted"]:
        context["previous_url"] = link(page=view.page - 1) if view.page > 1 else ""
    return render(request, "dashboard/results.html", context)


def _toggle(view, key: str) -> str:
    """The sort a column header links to: ascending, or descending when already ascending."""
    if view.sort == key and not view.descending:
        return "-" + key
    return key


@_login
def record(request: HttpRequest, name: str, record_id: str) -> HttpResponse:
    campaign = _campaign_or_404(request, name)
    view = results_selectors.record_view(campaign=campaign, record_id=record_id)
    if view is None:
        raise Http404(f"dataset {campaign.dataset.name} has no record {record_id!r}")
    return render(request, "dashboard/record.html", {"campaign": campaign, "view": view})


@_login
def kept_file(request: HttpRequest, name: str, file_name: str, record_id: str) -> FileResponse:
    """Stream one kept file of a record of a campaign the user may see."""
    campaign = _campaign_or_404(request, name)
    if not results_selectors.kept_file_allowed(campaign=campaign, record_id=record_id,
                                               name=file_name):
        raise Http404(f"campaign {campaign.name} keeps no file {file_name!r} for record "
                      f"{record_id!r}")
    try:
        handle = kept_file_open(campaign=campaign.name, record_id=record_id, name=file_name)
    except FileNotFoundError as exc:
        raise Http404(str(exc)) from None
    return FileResponse(handle, as_attachment=True, filename=file_name,
                        content_type="application/octet-stream")


@_login
def campaign_accounting_partial(request: HttpRequest, name: str) -> HttpResponse:
    campaign = _campaign_or_404(request, name)
    return render(request, "dashboard/partials/results_accounting.html",
                  {"campaign": campaign,
                   "accounting": accounting.campaign_accounting(campaign=campaign)})


@_login
def accounting_page(request: HttpRequest) -> HttpResponse:
    days = int(_number(request.GET.get("days"), accounting.DEFAULT_DAYS, 1,
                       accounting.MAX_DAYS))
    report = accounting.accounting_visible(user=request.user, days=days)
    return render(request, "dashboard/results_accounting.html",
                  {"accounting": report, "series": report.series(), "days": days})


@_login
def datasets(request: HttpRequest) -> HttpResponse:
    """The datasets the user may see (staff: all), with their record counts and campaigns."""
    page = Paginator(datasets_visible(user=request.user), DATASETS_PER_PAGE
                     ).get_page(request.GET.get("page"))
    campaigns: dict[int, list[Campaign]] = {}
    for campaign in campaigns_visible(user=request.user).filter(
            dataset__in=[dataset.pk for dataset in page]):
        campaigns.setdefault(campaign.dataset_id, []).append(campaign)
    return render(request, "dashboard/results_datasets.html",
                  {"page": page, "rows": [(dataset, campaigns.get(dataset.pk, []))
                                          for dataset in page]})


def export_links(campaign: Campaign) -> list[tuple[str, str]]:
    """(format, API URL) of every export format, for the campaign page's buttons."""
    return [(fmt, reverse(f"api-campaign-results-{fmt}", kwargs={"name": campaign.name}))
            for fmt in FORMATS]
