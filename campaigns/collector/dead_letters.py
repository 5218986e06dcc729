"""The dead-letter list: envelopes the collector cannot attribute to a task's delivery.

Not JSON, no job id, an unknown job id, an attempt id this portal did not issue, another
worker's or another record's result: such an envelope is moved off the results list (never
left at its head, where it would stop every batch) onto `htportal:dead-letters`, newest last,
trimmed to the DEAD_LETTERS_KEEP newest. Each entry is a JSON object
`{"reason", "at" (ISO time), "bytes" (the envelope's size), "raw" (its first ~1 kB)}`.
A dead letter counts as no attempt of any task.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from redis import Redis

DEAD_LETTERS_KEY = "htportal:dead-letters"
DEAD_LETTERS_KEEP = 1000
RAW_CHARS = 1024
REASON_CHARS = 500


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    at: str
    bytes: int
    raw: str


def dead_letter_entry(*, reason: str, raw: bytes, size: int) -> bytes:
    """The JSON entry of one refused envelope (its raw text cut to RAW_CHARS)."""
    return json.dumps({"reason": reason[:REASON_CHARS],
                       "at": datetime.now(dt_timezone.utc).isoformat(timespec="seconds"),
                       "bytes": size,
                       "raw": raw[:RAW_CHARS].decode("utf-8", errors="replace")}).encode()


def dead_letters(connection: Redis, limit: int = 100) -> list[DeadLetter]:
    """The newest `limit` dead letters, newest first (a selector: reads only)."""
    if limit < 1:
        return []
    letters = []
    for raw in reversed(connection.lrange(DEAD_LETTERS_KEY, -limit, -1)):
        try:
            entry = json.loads(raw)
            letters.append(DeadLetter(reason=str(entry["reason"]), at=str(entry["at"]),
                                      bytes=int(entry["bytes"]), raw=str(entry["raw"])))
        except (ValueError, KeyError, TypeError):
            letters.append(DeadLetter(reason="unreadable entry", at="", bytes=len(raw),
                                      raw=raw[:RAW_CHARS].decode("utf-8", errors="replace")))
    return letters


def dead_letters_count(connection: Redis) -> int:
    """How many dead letters are kept (at most DEAD_LETTERS_KEEP)."""
    return int(connection.llen(DEAD_LETTERS_KEY))
