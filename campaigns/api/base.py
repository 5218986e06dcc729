"""What every API view shares: errors as 400 {"error": "..."} with the service's message."""
from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from rest_framework import status
from rest_framework.response import Response

from campaigns.errors import ApplicationError
from campaigns.models import Campaign
from campaigns.services.ownership import NotChangeable, campaigns_visible


class JsonErrors:
    """Mixin for API views: a service's ApplicationError becomes 400 {"error": message} (409 for
    a campaign that is no longer a draft); DRF's own errors (401, 403, 404, 405, 415, a field
    error) keep their status with their message under "error" too. Anything else still raises,
    so a bug is a 500, never a quiet 400."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, ApplicationError):
            code = status.HTTP_409_CONFLICT if isinstance(exc, NotChangeable) else status.HTTP_400_BAD_REQUEST
            return Response({"error": str(exc)}, status=code)
        response = super().handle_exception(exc)
        response.data = {"error": error_text(response.data)}
        return response


class AnyAccept:
    """Mixin for views that answer in a format of their own (YAML, JSON Lines, extended XYZ): the
    Accept header never makes them 406; their errors are JSON."""

    def perform_content_negotiation(self, request, force: bool = False):
        return super().perform_content_negotiation(request, force=True)


def error_text(data: Any) -> str:
    """DRF's error data ({"detail": ...}, {"field": [messages]}, [messages]) as one line."""
    if isinstance(data, dict):
        if set(data) == {"detail"}:
            return str(data["detail"])
        return "; ".join(f"{key}: {error_text(value)}" for key, value in data.items())
    if isinstance(data, list):
        return " ".join(error_text(item) for item in data)
    return str(data)


def campaign_of(request, name: str) -> Campaign:
    """The campaign `name` if the user may see it; 404 otherwise (even if it exists)."""
    return get_object_or_404(campaigns_visible(user=request.user), name=name)
