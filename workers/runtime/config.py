"""The worker runtime's own environment variables, read without Django.

Every variable has an embedded default, so a bare grid node needs none of them; a value that is
set but wrong stops the worker at start with one line naming the variable (ConfigError).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

REDIS_URL = "HTPORTAL_REDIS_URL"
# Names under which a Redis URL (with its password) may reach the worker; all are removed from
# its environment once read, so no program it starts inherits them.
REDIS_URL_NAMES = (REDIS_URL, "REDIS_URL")
PROGRAM_ENV = "HTPORTAL_PROGRAM_ENV"  # more variables passed to programs: NAME,NAME
PROGRAM_PATH = "HTPORTAL_PROGRAM_PATH"  # PATH of programs (default: the worker's PATH)
SCRATCH_DIR = "HTPORTAL_SCRATCH_DIR"  # read by scratch.py; default: TMPDIR (tempfile's choice)
REPEATED_FAILURES = "HTPORTAL_REPEATED_FAILURES"
KEEP_SCRATCH = "HTPORTAL_KEEP_SCRATCH"  # read by scratch.py too; validated here at start
KEEP_FILE_CAP = "HTPORTAL_KEEP_FILE_CAP"
HEARTBEAT_INTERVAL = "HTPORTAL_HEARTBEAT_INTERVAL"

DEFAULT_KEEP_FILE_CAP = 16 * 1024 * 1024  # bytes, before compression
DEFAULT_HEARTBEAT_INTERVAL = 10.0  # seconds between heartbeats while a task runs
# The same program failure on this many different records in a row: the node is broken.
DEFAULT_REPEATED_FAILURES = 3

# A variable whose name says it may hold a credential never reaches a program, even when
# allowlisted: the worker refuses such an allowlist at start.
CREDENTIAL_NAME = re.compile(r"REDIS|PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# scratch.py keeps scratch for any value but ""/0/false/no: accept only values both agree on.
_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")


class ConfigError(ValueError):
    """An environment variable (or option) with a value the runtime cannot use."""


@dataclass(frozen=True)
class RuntimeConfig:
    redis_url: Optional[str]
    keep_scratch: bool
    keep_file_cap: int
    heartbeat_interval: float
    program_env: Tuple[str, ...] = ()
    repeated_failures: int = DEFAULT_REPEATED_FAILURES


def env_bool(name: str, env: Mapping[str, str]) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={env[name]!r} is not a yes/no value (use 1/0, true/false, yes/no)")


def env_positive(name: str, default: float, env: Mapping[str, str], *, convert=float,
                 what: str = "a number of seconds"):
    """A number > 0 from `env`: `convert`ed (int or float), `what` naming it in the error."""
    raw = env.get(name, "").strip()
    try:
        value = convert(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {what}") from None
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def env_redis_url(name: str, env: Mapping[str, str]) -> Optional[str]:
    raw = env.get(name, "").strip()
    if raw and not raw.startswith(("redis://", "rediss://", "unix://")):
        # The value itself is left out: it may hold a password.
        raise ConfigError(f"{name} is not a redis://, rediss:// or unix:// URL")
    return raw or None


def env_names(name: str, env: Mapping[str, str]) -> Tuple[str, ...]:
    """The variable names of a NAME,NAME list; ConfigError for a bad or credential-like name."""
    names = tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())
    for variable in names:
        if not _VARIABLE_NAME.fullmatch(variable):
            raise ConfigError(f"{name}: {variable!r} is not a variable name "
                              f"(letters, digits and _, comma-separated)")
        if CREDENTIAL_NAME.search(variable):
            raise ConfigError(
                f"{name}: {variable!r} may hold a credential and is never passed to programs "
                f"(names containing REDIS, PASSWORD, PASSWD, SECRET, TOKEN, KEY or CREDENTIAL)")
    return names


def load(env: Optional[Mapping[str, str]] = None) -> RuntimeConfig:
    """The runtime's settings from `env` (default os.environ); ConfigError on a bad value."""
    env = os.environ if env is None else env
    return RuntimeConfig(
        redis_url=env_redis_url(REDIS_URL, env),
        keep_scratch=env_bool(KEEP_SCRATCH, env),
        keep_file_cap=env_positive(KEEP_FILE_CAP, DEFAULT_KEEP_FILE_CAP, env, convert=int,
                                   what="a whole number"),
        heartbeat_interval=env_positive(HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_INTERVAL, env),
        program_env=env_names(PROGRAM_ENV, env),
        repeated_failures=env_positive(REPEATED_FAILURES, DEFAULT_REPEATED_FAILURES, env,
                                       convert=int, what="a whole number"),
    )
