"""Which Redis credentials a pool's workers get in their env file (docs/security-redis.md).

Workers log in as the worker user (campaigns.redis_acl.worker_redis_url), which may only take
jobs and push results. Before handing that URL out, the scaler logs in with it once: when Redis
refuses it (the rules of `manage.py redis_acl` not applied, or another password), the portal's
own REDIS_URL is handed instead only where settings.WORKER_REDIS_FALLBACK allows it (default
"local": pools on this machine, which runs the portal anyway), and always with a warning;
a SLURM or HTCondor pool is refused (ScalerError) rather than given the portal's password.
A portal URL without a password has no secret to leak: it is handed out, with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from campaigns.redis_acl import worker_login_problem, worker_redis_url
from htportal.redis_credentials import redis_url_credentials
from workers.models import WorkerPool
from workers.scaler.base import ScalerError

FIX = ("run `manage.py redis_acl --apply` to create the worker user "
       "(docs/security-redis.md)")


@dataclass(frozen=True)
class WorkerCredentials:
    url: str
    user: str           # the Redis user the workers log in as
    warning: str = ""   # set when the workers get the portal's own credentials

    @property
    def has_password(self) -> bool:
        return redis_url_credentials(self.url)[1] is not None


def worker_credentials(*, pool: WorkerPool) -> WorkerCredentials:
    """The URL `pool`'s workers get: the pool's own Redis URL when set, else the worker user's
    when Redis takes it, else (where allowed) the portal's. ScalerError when not allowed."""
    portal_user, portal_password = redis_url_credentials(settings.REDIS_URL)
    if pool.redis_url:
        user, password = redis_url_credentials(pool.redis_url)
        if password is None or (user, password) != (portal_user, portal_password):
            return WorkerCredentials(pool.redis_url, user)
        return _fallback(pool, pool.redis_url, "the pool's Redis URL holds the portal's own "
                                               "user and password (blank it to hand the "
                                               "worker user's)")
    url = worker_redis_url()
    problem = worker_login_problem(url=url)
    if problem is None:
        return WorkerCredentials(url, redis_url_credentials(url)[0])
    worker_user = redis_url_credentials(url)[0]
    return _fallback(pool, settings.REDIS_URL,
                     f"Redis refuses the worker user {worker_user!r} ({problem})")


def _fallback(pool: WorkerPool, url: str, why: str) -> WorkerCredentials:
    user, password = redis_url_credentials(url)
    mode = settings.WORKER_REDIS_FALLBACK
    if password is None and mode != "never":
        return WorkerCredentials(url, user, warning=(
            f"pool {pool.name}: {why}; workers get the portal's own Redis URL, which needs no "
            f"password: anyone who reaches Redis has every right. Give Redis a password and "
            f"{FIX}"))
    allowed = mode == "always" or (mode == "local" and pool.kind == WorkerPool.Kind.LOCAL)
    if not allowed:
        raise ScalerError(
            f"pool {pool.name}: {why}; not handing its workers the portal's own Redis "
            f"credentials (HTPORTAL_WORKER_REDIS_FALLBACK={mode}: "
            f"{'never' if mode == 'never' else 'local pools only'}): {FIX}")
    return WorkerCredentials(url, user, warning=(
        f"pool {pool.name}: {why}; workers get the portal's own Redis credentials "
        f"(HTPORTAL_WORKER_REDIS_FALLBACK={mode}): {FIX}"))
