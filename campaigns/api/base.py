"""What every API view shares: errors as {"error": "..."} (400 with the service's message)."""
from __future__ import annotations

from typing import Any, Optional

from django.shortcuts import get_object_or_404
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from campaigns.errors import ApplicationError
from campaigns.models import Campaign
from campaigns.services.ownership import NotChangeable, campaigns_visible


def error_handler(exc: Exception, context: dict) -> Optional[Response]:
    """REST_FRAMEWORK's EXCEPTION_HANDLER: every API error is {"error": "..."}.

    A service's ApplicationError becomes 400 with its message (409 for a campaign that is no
    longer a draft); DRF's own errors (400, 401, 403, 404, 405, 413, 415, 429, the token
    endpoint's) keep their status and headers (Retry-After, WWW-Authenticate) with their message
    under "error". Anything else returns None, so DRF re-raises it: a bug is a 500, never a quiet
    400."""
    if isinstance(exc, ApplicationError):
        code = status.HTTP_409_CONFLICT if isinstance(exc, NotChangeable) else status.HTTP_400_BAD_REQUEST
        return Response({"error": str(exc)}, status=code)
    response = exception_handler(exc, context)
    if response is not None:
        response.data = {"error": error_text(response.data)}
    return response


class JsonErrors:
    """Mixin kept for the views that name it: error_handler, set for every API view in
    settings.REST_FRAMEWORK, now gives every error the {"error": ...} shape."""


class AnyAccept:
    """Mixin for views that answer in a format of their own (YAML, JSON Lines, extended XYZ): the
    Accept header never makes them 406; their errors are JSON."""

    def perform_content_negotiation(self, request, force: bool = False):
        return super().perform_content_negotiation(request, force=True)


def error_text(data: Any) -> str:
    """DRF's error data ({"detail": ...}, {"field": [messages]}, [messages]) as one line."""
    if isinstance(data, dict):
        if set(data) <= {"detail", "non_field_errors"}:  # not about one field: no prefix
            return " ".join(error_text(value) for value in data.values())
        return "; ".join(f"{key}: {error_text(value)}" for key, value in data.items())
    if isinstance(data, list):
        return " ".join(error_text(item) for item in data)
    return str(data)


def campaign_of(request, name: str) -> Campaign:
    """The campaign `name` if the user may see it; 404 otherwise (even if it exists)."""
    return get_object_or_404(campaigns_visible(user=request.user), name=name)
