"""First-run set-up: an admin user and the demo campaign."""
from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model


def admin_user_ensure(*, username: str = "admin") -> str | None:
    """Create a superuser when there is none; return its new password, or None if one exists."""
    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(username=username, email="", password=password)
    return password
