"""The portal's one way to reach Redis (settings.REDIS_URL: password and TLS ride in the URL)."""
from __future__ import annotations

from django.conf import settings
from redis import Redis

SOCKET_TIMEOUT_S = 30


def redis_connection() -> Redis:
    """A client for settings.REDIS_URL; it connects on first use."""
    return Redis.from_url(settings.REDIS_URL, socket_connect_timeout=10,
                          socket_timeout=SOCKET_TIMEOUT_S, socket_keepalive=True,
                          health_check_interval=30)
