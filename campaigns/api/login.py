"""POST /api/token/: a token for a username and password, with wrong passwords throttled.

DRF's throttles count every request; here only a failed login counts. After LOGIN_RATE failures
(settings, HTPORTAL_LOGIN_RATE, default 10/min) for one username from one client address, every
attempt for that pair, the right password included, is 429 until the oldest failure leaves the
window. The count lives in Django's default cache (docs/security.md).
"""
from __future__ import annotations

import hashlib

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.throttling import SimpleRateThrottle

from campaigns.api.parsers import BoundedFormParser, BoundedJSONParser, BoundedMultiPartParser
from campaigns.api.serializers import ErrorSerializer


class FailedLoginThrottle(SimpleRateThrottle):
    """Allows a login while the (username, address) pair has fewer than `rate` recent failures;
    `record_failure` adds one. Asking does not count."""

    scope = "login"

    def get_cache_key(self, request, view) -> str:
        username = request.data.get("username", "") if hasattr(request.data, "get") else ""
        who = f"{str(username)[:150]}\0{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope,
                                    "ident": hashlib.sha256(who.encode()).hexdigest()}

    def allow_request(self, request, view) -> bool:
        self.key = self.get_cache_key(request, view)
        self.now = self.timer()
        self.history = [at for at in self.cache.get(self.key, []) if at > self.now - self.duration]
        return len(self.history) < self.num_requests

    def record_failure(self) -> None:
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


TOKEN = inline_serializer("Token", {"token": serializers.CharField()})


class LoginApi(ObtainAuthToken):
    throttle_classes = [FailedLoginThrottle]
    parser_classes = [BoundedJSONParser, BoundedFormParser, BoundedMultiPartParser]

    def get_throttles(self):
        # One set per request, so that post() records the failure on the throttle that asked.
        if not hasattr(self, "_throttles"):
            self._throttles = super().get_throttles()
        return self._throttles

    @extend_schema(summary="A token for a username and password",
                   request=inline_serializer("Login", {"username": serializers.CharField(),
                                                       "password": serializers.CharField()}),
                   responses={200: TOKEN, 400: ErrorSerializer, 413: ErrorSerializer,
                              415: ErrorSerializer, 429: ErrorSerializer},
                   auth=[])
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            for throttle in self.get_throttles():
                throttle.record_failure()
            raise ValidationError(serializer.errors)
        return super().post(request, *args, **kwargs)
