"""Deployment settings from the environment: `check --deploy` is clean when they are set, and
the dashboard answers with a Content-Security-Policy that allows nothing inline or foreign."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys

import pytest
from django.test import Client

from tests.campaigns.conftest import REPO
from tests.pipeline.conftest import portal_redis  # noqa: F401

DEPLOYED = {
    "HTPORTAL_DEBUG": "false",
    "HTPORTAL_SECURE_COOKIES": "true",
    "HTPORTAL_HSTS_SECONDS": "31536000",
    "HTPORTAL_HSTS_PRELOAD": "true",
    "HTPORTAL_SSL_REDIRECT": "true",
    "HTPORTAL_BEHIND_TLS_PROXY": "true",
    "HTPORTAL_ALLOWED_HOSTS": "portal.example.org",
}


def portal(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py with the shipped settings (not the tests'), only `env` set of ours."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("HTPORTAL_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean.update(DJANGO_SETTINGS_MODULE="htportal.settings", HTPORTAL_VAR_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_the_deployment_variables(tmp_path):
    result = portal(tmp_path, "check", "--deploy", "--fail-level", "WARNING",
                    HTPORTAL_SECRET_KEY=secrets.token_urlsafe(64), **DEPLOYED)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert "WARNINGS" not in result.stderr


def test_check_deploy_names_what_is_missing_without_them(tmp_path):
    result = portal(tmp_path, "check", "--deploy")
    warnings = sorted(set(re.findall(r"security\.W\d+", result.stderr)))
    assert warnings == ["security.W004", "security.W008", "security.W012", "security.W016"]


VARIABLES = [  # (variable, value, setting, what the setting becomes)
    ("HTPORTAL_SECURE_COOKIES", "true", "SESSION_COOKIE_SECURE", True),
    ("HTPORTAL_SECURE_COOKIES", "true", "CSRF_COOKIE_SECURE", True),
    ("HTPORTAL_HSTS_SECONDS", "600", "SECURE_HSTS_SECONDS", 600),
    ("HTPORTAL_HSTS_PRELOAD", "yes", "SECURE_HSTS_PRELOAD", True),
    ("HTPORTAL_HSTS_INCLUDE_SUBDOMAINS", "false", "SECURE_HSTS_INCLUDE_SUBDOMAINS", False),
    ("HTPORTAL_SSL_REDIRECT", "on", "SECURE_SSL_REDIRECT", True),
    ("HTPORTAL_BEHIND_TLS_PROXY", "1", "SECURE_PROXY_SSL_HEADER",
     ["HTTP_X_FORWARDED_PROTO", "https"]),
    ("HTPORTAL_MAX_BODY_BYTES", "1234", "MAX_BODY_BYTES", 1234),
    ("HTPORTAL_MAX_UPLOAD_BYTES", "99", "MAX_UPLOAD_BYTES", 99),
    ("HTPORTAL_MAX_JSON_DEPTH", "8", "MAX_JSON_DEPTH", 8),
    ("HTPORTAL_YAML_MAX_NODES", "500", "YAML_MAX_NODES", 500),
    ("HTPORTAL_LOGIN_RATE", "5/hour", "LOGIN_RATE", "5/hour"),
    ("HTPORTAL_CACHE_URL", "redis://cache:6379/2", "CACHES",
     {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                  "LOCATION": "redis://cache:6379/2"}}),
]
DEFAULTS = {"SESSION_COOKIE_SECURE": False, "CSRF_COOKIE_SECURE": False, "SECURE_HSTS_SECONDS": 0,
            "SECURE_HSTS_PRELOAD": False, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
            "SECURE_SSL_REDIRECT": False, "SECURE_PROXY_SSL_HEADER": None,
            "MAX_BODY_BYTES": 10_485_760, "MAX_UPLOAD_BYTES": 1_073_741_824, "MAX_JSON_DEPTH": 64,
            "YAML_MAX_NODES": 100_000, "LOGIN_RATE": "10/min",
            "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}}


def settings_of(tmp_path, **env: str) -> dict:
    code = ("import json; from django.conf import settings; "
            f"print(json.dumps({{n: getattr(settings, n, None) for n in {sorted(DEFAULTS)!r}}}))")
    result = portal(tmp_path, "shell", "--no-imports", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_each_variable_sets_its_setting(tmp_path):
    got = settings_of(tmp_path, **{name: value for name, value, _, _ in VARIABLES})
    assert got == {setting: expected for _, _, setting, expected in VARIABLES}


def test_the_defaults_run_a_checkout_on_plain_http(tmp_path):
    assert settings_of(tmp_path) == DEFAULTS


def test_a_variable_that_is_not_a_boolean_stops_the_portal(tmp_path):
    result = portal(tmp_path, "check", HTPORTAL_SECURE_COOKIES="maybe")
    assert result.returncode != 0
    assert "HTPORTAL_SECURE_COOKIES='maybe' is not a boolean (use true or false)" in result.stderr


@pytest.mark.parametrize("raw, ok", [("10/min", True), ("3/s", True), ("100/day", True),
                                     ("5/hour", True), ("ten/min", False), ("10", False),
                                     ("10/fortnight", False), ("0/min", False)])
def test_a_login_rate_is_checked_when_the_settings_load(monkeypatch, raw, ok):
    from django.core.exceptions import ImproperlyConfigured

    from htportal.env import env_rate

    monkeypatch.setenv("HTPORTAL_LOGIN_RATE", raw)
    if ok:
        assert env_rate("HTPORTAL_LOGIN_RATE", "10/min") == raw
    else:
        with pytest.raises(ImproperlyConfigured) as caught:
            env_rate("HTPORTAL_LOGIN_RATE", "10/min")
        assert str(caught.value).startswith(f"HTPORTAL_LOGIN_RATE={raw!r} is not a rate")


@pytest.mark.django_db
def test_the_dashboard_has_a_strict_content_security_policy(django_user_model, portal_redis):
    client = Client()
    client.force_login(django_user_model.objects.create_user("alice"))
    response = client.get("/dashboard/")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    body = response.content.decode()
    # Nothing the policy would block: no inline script or style, no inline handler.
    assert not re.search(r"<script(?![^>]*\b(src|type=\"application/json\"))", body)
    assert "<style" not in body and "style=" not in body
    assert not re.search(r"\son[a-z]+=", body)


@pytest.mark.django_db
def test_the_api_has_no_dashboard_policy(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("alice"))
    assert "Content-Security-Policy" not in client.get("/api/datasets/").headers
