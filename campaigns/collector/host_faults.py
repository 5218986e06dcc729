"""Worker faults per host: nodes whose environment is broken (program not found, scratch not
writable), as their results say with `"fault": "worker"` (docs/runtime.md).

Two Redis hashes: `htportal:host-faults` host -> count, and `htportal:host-fault-reasons`
host -> JSON {"at", "reason"} of the last one. Bounded: at most HOSTS_KEEP hosts are counted
(a flood of made-up host names stops being recorded there, not the collector).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from redis import Redis

HOST_FAULTS_KEY = "htportal:host-faults"
HOST_FAULT_REASONS_KEY = "htportal:host-fault-reasons"
HOSTS_KEEP = 10_000
HOST_CHARS = 200
REASON_CHARS = 500


@dataclass(frozen=True)
class HostFault:
    host: str
    count: int
    at: str
    reason: str


def host_faults_record(*, connection: Redis, faults: list[tuple[str, str]]) -> None:
    """Count one worker fault per (host, reason); the last reason of each host is kept."""
    if not faults:
        return
    known = connection.hlen(HOST_FAULTS_KEY)
    now = datetime.now(dt_timezone.utc).isoformat(timespec="seconds")
    with connection.pipeline(transaction=False) as pipe:
        for host, reason in faults:
            host = (host or "?")[:HOST_CHARS]
            if known >= HOSTS_KEEP and not connection.hexists(HOST_FAULTS_KEY, host):
                continue
            pipe.hincrby(HOST_FAULTS_KEY, host, 1)
            pipe.hset(HOST_FAULT_REASONS_KEY, host,
                      json.dumps({"at": now, "reason": reason[:REASON_CHARS]}))
        pipe.execute()


def host_faults(connection: Redis, limit: int = 100) -> list[HostFault]:
    """The hosts with the most worker faults, most first (a selector: reads only)."""
    counts = connection.hgetall(HOST_FAULTS_KEY)
    top = sorted(((int(n), h.decode("utf-8", errors="replace")) for h, n in counts.items()),
                 key=lambda item: (-item[0], item[1]))[:max(limit, 0)]
    reasons = connection.hmget(HOST_FAULT_REASONS_KEY, [host for _, host in top]) if top else []
    faults = []
    for (count, host), raw in zip(top, reasons):
        try:
            last = json.loads(raw) if raw else {}
        except ValueError:
            last = {}
        faults.append(HostFault(host=host, count=count, at=str(last.get("at", "")),
                                reason=str(last.get("reason", ""))))
    return faults
