"""Bounds on values users send: how deep a JSON-like value nests (queries, API bodies, JSON Lines
records). Limits come from settings (HTPORTAL_MAX_JSON_DEPTH, docs/security.md)."""
from __future__ import annotations

from typing import Any

DEFAULT_MAX_JSON_DEPTH = 64


def max_json_depth() -> int:
    """settings.MAX_JSON_DEPTH, or the default outside Django (the readers run without it)."""
    try:
        from django.conf import settings

        return int(getattr(settings, "MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH))
    except Exception:  # settings not configured: a plain script
        return DEFAULT_MAX_JSON_DEPTH


def too_deep(value: Any, *, limit: int) -> bool:
    """True if lists and dicts in `value` nest more than `limit` deep (a scalar is depth 0, [] 1).

    Iterative, so a value nested far deeper than Python's recursion limit is measured too.
    """
    if not isinstance(value, (dict, list, tuple)):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in (item.values() if isinstance(item, dict) else item):
            if isinstance(child, (dict, list, tuple)):
                stack.append((child, depth + 1))
    return False


def depth_message(*, limit: int) -> str:
    return f"nested deeper than the limit of {limit} (HTPORTAL_MAX_JSON_DEPTH)"


def more_nodes_than(value: Any, *, limit: int) -> bool:
    """True if `value` holds more than `limit` values (containers and scalars, each counted);
    stops counting at the limit."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False
