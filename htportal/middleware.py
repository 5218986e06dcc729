"""Project-wide middleware: a Content-Security-Policy for the dashboard, and a plain answer for
an RQ job whose data is not JSON."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponseNotFound
from rq.exceptions import DeserializationError

RQ_PAGES = "/admin/django_rq/"


class UnreadableJobMiddleware:
    """A django-rq page that meets a job whose data is not JSON (a pickle someone wrote into
    Redis, htportal/nopickle.py) answers 404 saying so, instead of a 500: the job is not read."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DeserializationError) and request.path.startswith(RQ_PAGES):
            return HttpResponseNotFound(
                "This RQ job cannot be shown: its data is not JSON, and htportal reads nothing "
                "else (see docs/security.md). Delete it from Redis.", content_type="text/plain")
        return None


class ContentSecurityPolicyMiddleware:
    """Sets settings.DASHBOARD_CSP as the Content-Security-Policy of every response under
    /dashboard/: scripts, styles and everything else from this site only, no inline code."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith("/dashboard/") and settings.DASHBOARD_CSP:
            response.headers.setdefault("Content-Security-Policy", settings.DASHBOARD_CSP)
        return response
