"""Reading a bounded batch of envelopes and checking each one at the door.

A batch is bounded by count and by bytes: one Lua script walks the head of a list and stops
once the batch holds `max_batch_bytes` (always taking at least one envelope); an envelope over
`max_result_bytes` comes back as its size and its first and last kilobyte only, so a 60 MB
item is neither multiplied by the batch size nor copied whole.

JSON is parsed with a nesting-depth limit (checked on the raw bytes before json.loads, whose
C scanner would otherwise recurse until RecursionError) and refuses NaN, Infinity and numbers
that do not fit a float or a 64-bit integer (an honest xtb run can print NaN; SQLite's
JSON_VALID and MongoDB refuse it later, where it would fail the whole batch).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from redis import Redis

MAX_DEPTH = 64
MAX_INT_DIGITS = 19  # a 64-bit integer; MongoDB stores nothing larger
JOB_ID_CHARS = 100
EXCERPT_BYTES = 1024

# KEYS[1]: the list. ARGV: limit, max batch bytes, max item bytes, excerpt bytes.
_READ = """
local limit, budget, cap, excerpt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local out, total = {}, 0
for i = 0, limit - 1 do
  local item = redis.call('LINDEX', KEYS[1], i)
  if not item then break end
  local size = #item
  if size > cap then
    local tail = ''
    if size > 2 * excerpt then tail = string.sub(item, -excerpt) end
    out[#out + 1] = {size, string.sub(item, 1, excerpt), tail}
    total = total + 2 * excerpt
  else
    if #out > 0 and total + size > budget then break end
    out[#out + 1] = item
    total = total + size
  end
end
return out
"""


class BadJson(Exception):
    """The raw envelope is not JSON the collector takes; the message says why."""


@dataclass
class Envelope:
    """One item of a results list, as read and checked."""

    source: str                   # the list it came from
    raw: bytes                    # the item (only its first kilobyte when oversized)
    size: int
    data: dict = field(default_factory=dict)
    problem: str | None = None    # refused at the door, but attributable: fails its attempt
    orphan: str | None = None     # not attributable to a task: a dead letter, with the reason

    @property
    def job_id(self) -> str | None:
        job_id = self.data.get("job_id")
        return job_id if isinstance(job_id, str) and 0 < len(job_id) <= JOB_ID_CHARS else None


def envelopes_read(*, connection: Redis, key: str, limit: int, max_batch_bytes: int,
                   max_result_bytes: int, max_depth: int = MAX_DEPTH) -> list[Envelope]:
    """Up to `limit` envelopes from the head of `key` (nothing removed), bounded in bytes."""
    if limit < 1 or max_batch_bytes < 1:
        return []
    items = connection.eval(_READ, 1, key, limit, max_batch_bytes, max_result_bytes,
                            EXCERPT_BYTES)
    return [envelope_check(item, source=key, max_result_bytes=max_result_bytes,
                           max_depth=max_depth) for item in items]


def envelope_check(item: bytes | list, *, source: str, max_result_bytes: int,
                   max_depth: int = MAX_DEPTH) -> Envelope:
    """The item as an Envelope; never raises (what cannot be used says so in problem/orphan)."""
    if isinstance(item, list):  # oversized: (size, head, tail)
        size, head, tail = int(item[0]), item[1], item[2]
        envelope = Envelope(source=source, raw=head, size=size, data=_fields_of(head + tail))
        envelope.problem = (f"the result is {size:,} bytes, over the cap of "
                            f"{max_result_bytes:,} bytes")
        if envelope.job_id is None:
            envelope.orphan = f"{envelope.problem}, and names no job id in its first kilobyte"
        return envelope
    envelope = Envelope(source=source, raw=item, size=len(item))
    try:
        data = json_loads(item, max_depth=max_depth)
    except BadJson as exc:
        # Attributable by the raw text alone (the attempt id is checked as for any other),
        # so that the task says why, e.g. NaN in an xtb result.
        envelope.data, envelope.problem = _fields_of(item), str(exc)
        if envelope.job_id is None:
            envelope.orphan = f"{exc}; no job id found in it"
        return envelope
    except Exception as exc:  # noqa: BLE001 - nothing in an envelope may stop the batch
        envelope.orphan = f"unreadable ({type(exc).__name__})"
        return envelope
    if not isinstance(data, dict):
        envelope.orphan = "the envelope is not a JSON object"
        return envelope
    envelope.data = data
    if envelope.job_id is None:
        envelope.orphan = "no job id in the envelope"
    elif ("result" in data) == ("error" in data):
        envelope.problem = "the envelope needs exactly one of 'result' and 'error'"
    return envelope


# --- JSON with bounds -------------------------------------------------------------------------

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DELTA = [0] * 256
_DELTA[ord("[")] = _DELTA[ord("{")] = 1
_DELTA[ord("]")] = _DELTA[ord("}")] = -1


def nesting_depth(raw: bytes, *, at_most: int) -> int:
    """The deepest nesting of arrays and objects in `raw` (brackets inside strings do not
    count), or any number up to `at_most` when it is plainly no deeper than that."""
    if raw.count(b"[") + raw.count(b"{") <= at_most:
        return 0  # too few brackets to be deeper: the common case costs two counts
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= at_most:
        return 0
    return max(accumulate(map(_DELTA.__getitem__, brackets)))


def json_loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads with a depth limit and finite numbers only; BadJson with the reason."""
    depth = nesting_depth(raw, at_most=max_depth)
    if depth > max_depth:
        raise BadJson(f"the result is nested {depth:,} levels deep, over the limit of "
                      f"{max_depth}")
    try:
        if not _BIG_NUMBER.search(raw):  # the common case: json's C number parsing, no hooks
            return json.loads(raw, parse_constant=_constant)
        return json.loads(raw, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise BadJson(f"the result is nested too deeply (limit {max_depth})") from None
    except UnicodeDecodeError:
        raise BadJson("the result is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadJson(f"not JSON ({exc})") from None


# Where a number may not fit (a long run of digits, a three-digit exponent), the numbers are
# parsed by the checking hooks; elsewhere json's own parsing cannot overflow.
_BIG_NUMBER = re.compile(rb"\d{%d,}|[eE][+-]?\d{3,}" % (MAX_INT_DIGITS + 1))


def _constant(name: str) -> Any:
    raise BadJson(f"the result holds {name}, which is not a finite number (a program printed "
                  "it, or the worker sent it)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is out of range (it is not a finite float)")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadJson(f"the number {text[:40]}{'...' if len(text) > 40 else ''} has "
                      f"{len(text.lstrip('-')):,} digits, over the {MAX_INT_DIGITS} of a 64-bit "
                      "integer")
    return int(text)


_FIELD = {name: re.compile(rb'"' + name.encode() + rb'"\s*:\s*"([^"\\]{1,200})"')
          for name in ("job_id", "attempt", "worker")}


def _fields_of(raw: bytes) -> dict:
    """job_id, attempt and worker read from the raw text of an envelope json cannot take;
    a field found twice is not trusted."""
    fields = {}
    for name, pattern in _FIELD.items():
        found = pattern.findall(raw)
        if len(found) == 1:
            fields[name] = found[0].decode("utf-8", errors="replace")
    return fields
