"""The Redis lock that keeps a second copy of a loop (the collector) from running at once.

`SET key token NX EX ttl`; the holder renews it every turn and inside long batches, and a holder
that finds it no longer holds the lock stops before it writes (LockLost).
"""
from __future__ import annotations

import logging
import os
import socket
import uuid

from redis import Redis

log = logging.getLogger(__name__)

LOCK_TTL_S = 20
COLLECTOR_LOCK_KEY = "htportal:collector-lock"

# Renew only a lock we hold: another process may have taken it after ours expired.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""



class LockLost(Exception):
    """The lock is no longer ours: stop before touching what it guards."""


class LockHeld(Exception):
    """Another live process holds the loop's lock."""


class LoopLock:
    """`SET key token NX EX ttl`: one holder at a time, renewed by the holder each loop.

    The token is HOST:PID:RANDOM, so a process that finds the lock held by a dead process of its
    own host (killed -9) takes it over at once instead of waiting for it to expire.
    """

    def __init__(self, *, connection: Redis, key: str, ttl: int = LOCK_TTL_S) -> None:
        self.connection = connection
        self.key = key
        self.ttl = ttl
        self.host = socket.gethostname()
        self.token = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def holder(self) -> str | None:
        raw = self.connection.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def acquire(self) -> None:
        """Take the lock, or raise LockHeld naming the holder."""
        if self.connection.set(self.key, self.token, nx=True, ex=self.ttl):
            return
        holder = self.holder()
        if holder is not None and self._holder_is_dead(holder):
            if self.connection.eval(_TAKE_OVER, 1, self.key, holder, self.token, self.ttl):
                log.info("lock %s: taken over from %s, which is no longer running",
                         self.key, holder)
                return
        raise LockHeld(holder or "?")

    def renew(self) -> bool:
        """Extend the lock; False when it is no longer ours."""
        return bool(self.connection.eval(_RENEW, 1, self.key, self.token, self.ttl))

    def release(self) -> None:
        self.connection.eval(_RELEASE, 1, self.key, self.token)

    def _holder_is_dead(self, holder: str) -> bool:
        host, _, rest = holder.partition(":")
        pid_text = rest.partition(":")[0]
        if host != self.host or not pid_text.isdigit() or int(pid_text) == os.getpid():
            return False
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _is_zombie(int(pid_text))


def _is_zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet still answers kill(pid, 0)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


# Trim lists and push onto others only while `lock` is ours (or with no lock, always), in one
# atomic step: a collector that lost the lock (it expired and another took over) must not
# remove envelopes the other one has not written, nor file them a second time.
# KEYS: the lock, the lists to trim, the lists to push onto. ARGV: the token ('' = no lock),
# how many lists to trim, the count to trim from each; then for each push list: how many
# items, how many to keep at most (0 = all), the items.
_TRIM_IF_HOLDER = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local trims = tonumber(ARGV[2])
for i = 1, trims do
  local count = tonumber(ARGV[2 + i])
  if count > 0 then redis.call('LTRIM', KEYS[1 + i], count, -1) end
end
local at = 3 + trims
for k = 2 + trims, #KEYS do
  local n, keep = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  at = at + 2
  for j = at, at + n - 1 do redis.call('RPUSH', KEYS[k], ARGV[j]) end
  at = at + n
  if keep > 0 then redis.call('LTRIM', KEYS[k], -keep, -1) end
end
return 1
"""


def lists_trim_if_holder(*, connection: Redis, lock: LoopLock | None,
                         trims: dict[str, int],
                         pushes: dict[str, tuple[list[bytes], int]] | None = None) -> None:
    """LTRIM `count` items off the head of each list in `trims` and RPUSH each list's items in
    `pushes` (items, keep at most: 0 = all), atomically, only while `lock` is ours.

    Raises LockLost (nothing trimmed or pushed) when another process holds the lock now.
    """
    pushes = {key: value for key, value in (pushes or {}).items() if value[0]}
    trims = {key: count for key, count in trims.items() if count > 0}
    if not trims and not pushes:
        return
    lock_key = lock.key if lock is not None else "htportal:no-lock"
    args: list = [lock.token if lock is not None else "", len(trims), *trims.values()]
    for items, keep in pushes.values():
        args += [len(items), keep, *items]
    if not connection.eval(_TRIM_IF_HOLDER, 1 + len(trims) + len(pushes), lock_key, *trims,
                           *pushes, *args):
        raise LockLost(f"the lock {lock_key} is no longer ours; the batch stays in Redis")
