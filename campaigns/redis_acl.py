"""The Redis ACL users of htportal (docs/security-redis.md): what a worker may do, and the portal.

A worker runs on a machine we do not own, so it logs in as a user that can do what rq 2.8's
worker and htportal's runtime do, and nothing else: pop its queues into their intermediate
lists, keep its own registration, heartbeats and job hashes, read campaign specs, push result
envelopes and write its capabilities key. It cannot FLUSHALL, CONFIG, KEYS, read or trim the
results list, delete a queue, take the collector's or a feeder's lock, or touch any other key.

The commands below are the ones rq sends (queue.py dequeue_any: BLPOP over several queues,
BLMOVE/LMOVE for one; worker/base.py registration, heartbeats, maintenance; registry.py;
job.py; results.py; intermediate_queue.py; executions.py), watched with MONITOR and checked
against a live worker in tests/test_redis_acl.py. rq's worker runs no Lua script, so EVAL and
EVALSHA are not granted.

Passwords go into the rules as SHA-256 hashes (`#...`): the printed rules and an ACL file made
from them hold no password.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import redis
from django.conf import settings
from redis import Redis

from campaigns.locks import COLLECTOR_LOCK_KEY
from campaigns.pipeline_keys import FEED_LOCK_PREFIX, RESULTS_KEY, SPEC_KEY_PREFIX
from htportal.redis_credentials import redis_url_as, redis_url_credentials

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5
WORKER_CAPS_PREFIX = "htportal:worker-caps"
DEAD_LETTERS_KEY = "htportal:dead-letters"

# rq's keys a worker reads and writes (not its queues: those only through the commands below).
WORKER_RQ_KEYS = (
    "rq:job:*", "rq:results:*", "rq:execution:*", "rq:executions:*",
    "rq:worker:*", "rq:workers", "rq:workers:*", "rq:queues",
    "rq:wip:*", "rq:finished:*", "rq:failed:*", "rq:deferred:*", "rq:scheduled:*",
    "rq:canceled:*", "rq:clean_registries:*", "rq:groups", "rq:group:*",
)
# Read only: a worker checks rq's suspension flag and fetches campaign specs.
WORKER_READ_KEYS = ("rq:suspended", f"{SPEC_KEY_PREFIX}:*")
WORKER_CHANNELS = ("rq:pubsub:*",)  # rq's command channel rq:pubsub:<worker name>

WORKER_COMMANDS = (
    # connection: redis-py's health checks, SELECT for a /N database, rq's CLIENT SETNAME and
    # its server version (INFO server only: the other sections count clients and keys)
    "ping", "select", "client|setname", "info|server",
    "multi", "exec", "discard", "watch", "unwatch", "subscribe", "unsubscribe",
    # keys
    "exists", "del", "unlink", "expire", "pexpire", "persist", "ttl", "pttl", "type",
    "get", "set",
    "hset", "hmset", "hget", "hmget", "hgetall", "hdel", "hexists", "hincrby", "hincrbyfloat",
    "sadd", "srem", "smembers", "sismember", "scard",
    "zadd", "zrem", "zrange", "zrangebyscore", "zremrangebyscore", "zscore", "zcard",
    "xadd", "xrange", "xrevrange", "xlen",
)
# Queues: take a job (into the intermediate list), give one back, clean the intermediate list.
# No DEL, LTRIM, RENAME, LSET: a worker cannot drop or rewrite a queue in one command.
QUEUE_SELECTOR = ("~rq:queue:*", "+blpop", "+lpop", "+blmove", "+lmove", "+rpush", "+lpush",
                  "+lrem", "+lrange", "+llen", "+lpos")
# intermediate_queue.py's rq:queue:<name>:intermediate:first_seen:<job id> markers.
FIRST_SEEN_SELECTOR = ("~rq:queue:*:intermediate:first_seen:*", "+get", "+set", "+del")
# Results: RPUSH only, write-only (%W): no LRANGE, LPOP, LTRIM or DEL of what others pushed.
RESULTS_SELECTOR = (f"%W~{RESULTS_KEY}", "+rpush")
CAPS_SELECTOR = (f"%W~{WORKER_CAPS_PREFIX}:*", "+set", "+setex", "+expire", "+del")

# The portal (feeder, collector, scaler, web) does everything on htportal's keys, runs its Lua
# scripts, and reads INFO (Redis memory on the status page); it needs no FLUSHALL, FLUSHDB,
# CONFIG, KEYS, DEBUG, SHUTDOWN, MONITOR or ACL (all in @dangerous).
PORTAL_KEYS = ("rq:*", "htportal:*")
PORTAL_CHANNELS = ("rq:*",)
PORTAL_COMMANDS = ("+@all", "-@dangerous", "+info", "+client|setname")

# Keys a worker must never write, named in tests and docs: each is outside every pattern above
# but RESULTS_KEY, which a worker may only RPUSH to.
PORTAL_ONLY_KEYS = (RESULTS_KEY, COLLECTOR_LOCK_KEY, f"{FEED_LOCK_PREFIX}:<queue>",
                    DEAD_LETTERS_KEY)


class AclError(Exception):
    """Rules that cannot be made or applied; the message says why and what to do."""


@dataclass(frozen=True)
class AclRule:
    """One Redis user's rules: the words after `ACL SETUSER <user>` (and after `user <user>`
    in an ACL file). They start with `reset`, so applying them again replaces, never adds."""

    user: str
    words: Tuple[str, ...]

    def command(self) -> str:
        """The ACL SETUSER line, as redis-cli takes it (selectors quoted)."""
        return " ".join(["ACL", "SETUSER", self.user, *(_cli_word(w) for w in self.words)])

    def aclfile_line(self) -> str:
        """The line for an aclfile (`aclfile /etc/redis/users.acl` in redis.conf)."""
        return " ".join(["user", self.user, *self.words])


def worker_redis_url() -> str:
    """The URL workers get: settings.WORKER_REDIS_URL, else the portal's REDIS_URL with the
    worker user (WORKER_REDIS_USER, WORKER_REDIS_PASSWORD) in place of the portal's."""
    return settings.WORKER_REDIS_URL or redis_url_as(
        settings.REDIS_URL, user=settings.WORKER_REDIS_USER,
        password=settings.WORKER_REDIS_PASSWORD)


def worker_redis_credentials() -> Tuple[str, Optional[str]]:
    """(user, password) of worker_redis_url(): the user the rules are made for."""
    return redis_url_credentials(worker_redis_url())


def worker_login_problem(*, url: str) -> Optional[str]:
    """Why Redis refuses a client of `url` (its login or a PING), or None when it takes it.
    A Redis the portal cannot reach at that address is not the credentials' fault: None."""
    connection = Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_S,
                                socket_timeout=CHECK_TIMEOUT_S)
    try:
        connection.ping()
    except redis.exceptions.AuthenticationError as exc:
        return str(exc).rstrip(".") or "wrong user or password"
    except redis.exceptions.NoPermissionError as exc:
        return f"the user may not PING: {exc}"
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("could not check the worker user's login (%s); taking it as it is", exc)
    except redis.exceptions.ResponseError as exc:  # Redis before 6: AUTH takes no user name
        return f"Redis does not take a user name and password ({exc}): ACL users need Redis 6+"
    finally:
        connection.close()
    return None


def password_hash(password: str) -> str:
    """The `#<sha256 hex>` ACL word that lets `password` in without storing it."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def worker_rule(*, user: str, password: str) -> AclRule:
    """The worker user's rules: the least a worker needs (see the module docstring)."""
    if not password:
        raise AclError(f"the worker user {user!r} needs a password "
                       f"(HTPORTAL_WORKER_REDIS_PASSWORD, or the one generated into var/)")
    words: List[str] = ["reset", "on", password_hash(password), "resetchannels",
                        *(f"&{pattern}" for pattern in WORKER_CHANNELS),
                        *(f"~{pattern}" for pattern in WORKER_RQ_KEYS),
                        *(f"%R~{pattern}" for pattern in WORKER_READ_KEYS),
                        "-@all", *(f"+{command}" for command in WORKER_COMMANDS)]
    for selector in (QUEUE_SELECTOR, FIRST_SEEN_SELECTOR, RESULTS_SELECTOR, CAPS_SELECTOR):
        words.append(f"({' '.join(selector)})")
    return AclRule(user, tuple(words))


def portal_rule(*, user: str, password: Optional[str]) -> AclRule:
    """The portal user's rules: all of htportal's and rq's keys, no @dangerous command."""
    if not password:
        raise AclError(f"the portal's REDIS_URL logs in as {user!r} with no password: give it "
                       f"one (redis://{user}:PASSWORD@host:6379/0) before restricting it, or "
                       f"anyone who reaches Redis has its rights")
    return AclRule(user, ("reset", "on", password_hash(password), "resetchannels",
                          *(f"&{pattern}" for pattern in PORTAL_CHANNELS),
                          *(f"~{pattern}" for pattern in PORTAL_KEYS), *PORTAL_COMMANDS))


def acl_apply(*, connection: Redis, rules: Sequence[AclRule]) -> List[str]:
    """Send each rule with ACL SETUSER over `connection`; one line per user applied."""
    done = []
    for rule in rules:
        connection.execute_command("ACL", "SETUSER", rule.user, *rule.words)
        done.append(f"user {rule.user}: rules applied")
    return done


def acl_whoami(*, connection: Redis) -> str:
    raw = connection.execute_command("ACL", "WHOAMI")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def default_user_open(*, connection: Redis) -> bool:
    """Whether Redis's `default` user is on and needs no password: then anyone who reaches
    Redis (a worker included) has its rights whatever the worker user may do."""
    info = connection.execute_command("ACL", "GETUSER", "default")
    if isinstance(info, list):  # RESP2: a flat list of name, value pairs
        info = dict(zip(info[::2], info[1::2]))
    flags = {(f.decode() if isinstance(f, bytes) else f) for f in _field(info, "flags")}
    return "on" in flags and "nopass" in flags


def _field(info: dict, name: str):
    return info.get(name, info.get(name.encode(), []))


def _cli_word(word: str) -> str:
    return f'"{word}"' if " " in word else word
