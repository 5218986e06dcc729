"""Redis credentials for settings.py, without Django: the users in Redis URLs, the worker user's
URL made from the portal's, and the worker password generated once into var/.

docs/security-redis.md says why workers log in as their own user.
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

DEFAULT_USER = "default"  # Redis's user for a client that sends a password only


def redis_url_credentials(url: str) -> Tuple[str, Optional[str]]:
    """(user, password) a client of `url` logs in with, as redis-py reads them: the user is
    "default" when the URL names none; the password is None when it has none."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    user = unquote(parts.username) if parts.username else query.get("username", "")
    password = unquote(parts.password) if parts.password is not None else query.get("password")
    return user or DEFAULT_USER, password or None


def redis_url_as(url: str, *, user: str, password: str) -> str:
    """`url` with its credentials replaced by `user` and `password` (host, port, database,
    TLS and query options kept; a username= or password= in the query string dropped)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("username", "password")]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


def redis_url_shown(url: str) -> str:
    """`url` fit for a log line: the password replaced by ***."""
    user, password = redis_url_credentials(url)
    if not password:
        return url
    return redis_url_as(url, user=user, password="PASSWORD").replace(":PASSWORD@", ":***@", 1)


def generated_password(var_dir: Path, *, variable: str, filename: str) -> str:
    """$variable, else a password generated once into var_dir/filename (mode 0600), as the
    secret key is: two processes starting at once read the same one."""
    given = os.environ.get(variable, "")
    if given:
        return given
    path = var_dir / filename
    if path.exists():
        return _written(path)
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _written(path)
    password = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def _written(path: Path, wait_s: float = 2.0) -> str:
    """The file's text, waiting a moment for the process that just created it to write it."""
    deadline = time.monotonic() + wait_s
    while True:
        text = path.read_text().strip()
        if text or time.monotonic() > deadline:
            return text
        time.sleep(0.02)
