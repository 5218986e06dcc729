"""Hints for a query that selects nothing: a path that names an input field without `input.`,
or a result path spelled as another tool spells it (docs/query.md, "Paths")."""
from __future__ import annotations

from typing import Iterable, List, Optional

from campaigns.models import Dataset
from campaigns.stores import store_for

# Result values are stored as {"value": ..., "unit": ...} (docs/runtime.md): a path that ends at
# a value's name must go one step further.
VALUE_SUFFIXES = ("_Eh", "_au", "_ev", "_eV")


def query_hint(*, dataset: Dataset, query: dict) -> Optional[str]:
    """One line that may explain an empty selection, or None; reads one record of the dataset."""
    paths = list(_paths(query))
    if not paths:
        return None
    sample = store_for(dataset).select(query={}, limit=1)
    record = sample[0] if sample else None
    hints: List[str] = []
    for path in paths:
        first = path.split(".", 1)[0]
        if record is not None and first in record.get("input", {}) and first not in record.get(
                "results", {}):
            hints.append(f"'{path}' is a result path; the record's input field is "
                         f"'input.{path}'")
        elif record is not None and first in record.get("results", {}):
            hint = _value_hint(path, record["results"])
            if hint:
                hints.append(hint)
    return "; ".join(hints) or None


def _value_hint(path: str, results: dict) -> Optional[str]:
    node = results
    parts = path.split(".")
    for index, part in enumerate(parts):
        if not isinstance(node, dict):
            return None
        if part not in node:
            for suffix in VALUE_SUFFIXES:
                if part.endswith(suffix) and part[:-len(suffix)] in node:
                    fixed = ".".join(parts[:index] + [part[:-len(suffix)], "value"])
                    return (f"'{path}' is not stored; values are {{value, unit}} objects: "
                            f"'{fixed}'")
            return None
        node = node[part]
    if isinstance(node, dict) and set(node) >= {"value", "unit"}:
        return f"'{path}' is a {{value, unit}} object; compare '{path}.value'"
    return None


def _paths(query: object) -> Iterable[str]:
    if not isinstance(query, dict):
        return
    for key, value in query.items():
        if key in ("$and", "$or") and isinstance(value, list):
            for part in value:
                yield from _paths(part)
        elif isinstance(key, str) and not key.startswith("$") and key != "id" and not \
                key.startswith("input."):
            yield key
