"""Keyset pagination: `?after=ID&limit=N`, the next page's URL in `next` and a Link header.

A cursor, not an offset: a page costs the same at the millionth row, and rows added meanwhile
neither shift nor repeat the others.
"""
from __future__ import annotations

from typing import Optional

from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from campaigns.errors import ApplicationError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def limit_param(request, *, default: int, maximum: int) -> int:
    """?limit=N, checked: a whole number from 1 to `maximum`."""
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise ApplicationError(f"limit must be a whole number from 1 to {maximum} (got {raw!r})")
    return limit


def next_url(request, after: Optional[str]) -> Optional[str]:
    """This request's URL with ?after= the given cursor; None when there is no next page."""
    if after is None:
        return None
    return replace_query_param(request.build_absolute_uri(), "after", after)


def link_header(url: Optional[str]) -> dict:
    return {"Link": f'<{url}>; rel="next"'} if url else {}


class AfterIdPagination(BasePagination):
    """Pages of a queryset in primary-key order, after the id `after`."""

    def paginate_queryset(self, queryset, request, view=None):
        raw = request.query_params.get("after") or "0"
        if not raw.isdigit() or len(raw) > 18:
            raise ApplicationError(f"after must be an id (a whole number), got {raw!r}")
        limit = limit_param(request, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
        rows = list(queryset.filter(pk__gt=int(raw)).order_by("pk")[:limit + 1])
        self.next = next_url(request, str(rows[limit - 1].pk)) if len(rows) > limit else None
        return rows[:limit]

    def get_paginated_response(self, data):
        return Response({"next": self.next, "results": data}, headers=link_header(self.next))

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["next", "results"],
            "properties": {
                "next": {"type": "string", "format": "uri", "nullable": True,
                         "description": "the next page; null on the last one"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {"name": "after", "in": "query", "required": False,
             "description": "start after this id (the previous page's last)",
             "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": "query", "required": False,
             "description": f"rows per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
        ]
