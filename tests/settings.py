"""Test settings: the embedded defaults plus a second database on PostgreSQL.

Tests that must hold on both databases use `@pytest.mark.django_db(databases=["default",
"postgres"])` and run their queries `.using(alias)`. HTPORTAL_TEST_POSTGRES_URL names the
server (default: the local one on 127.0.0.1:5432 with trust auth); tests/conftest.py starts a
throwaway server when none answers there.
"""
import os
import tempfile

import dj_database_url

os.environ.setdefault("HTPORTAL_VAR_DIR", tempfile.mkdtemp(prefix="htportal-test-var-"))

from htportal.settings import *  # noqa: E402,F401,F403
from htportal.settings import DATABASES, VAR_DIR  # noqa: E402

DATABASES["default"] = dj_database_url.parse(f"sqlite:///{VAR_DIR / 'test.sqlite3'}")
DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-default.sqlite3")}
DATABASES["postgres"] = dj_database_url.parse(
    os.environ.get("HTPORTAL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
)
DATABASES["postgres"]["TEST"] = {"NAME": f"test_htportal_{os.getpid()}"}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGE_DIR = VAR_DIR / "storage"
MEDIA_ROOT = STORAGE_DIR
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405 (whitenoise warns when it is missing)
