"""The selection query language: a subset of MongoDB filters, compiled to a Django Q object.

Paths (dotted, as in MongoDB):
  - `id` is the record's id (the `record_id` column, a string);
  - `input.<key>...` is a path into the record's input (`input.charge`, `input.meta.source`);
  - anything else is a path into the record's results, because in the original system results
    sat at the top of the MongoDB document: `wb97mv.wb97md3bj` is
    results["wb97mv"]["wb97md3bj"]. (A path `results.x` therefore means results["results"]["x"].)
  - a segment made of digits indexes an array (`dipole_au.2`, `input.coordinates.0.1`); an
    object key made of digits cannot be addressed. Keys may not contain `"` or `\\`.

Operators: equality (`{"path": value}` or `$eq`), `$ne`, `$in`, `$nin`, `$exists`, `$gt`,
`$gte`, `$lt`, `$lte`, and at the top level (or inside them) `$and` and `$or`. Several fields in
one object, or several operators on one field, must all hold.

Semantics, the same on SQLite and PostgreSQL (tests/campaigns/test_query.py runs one table of
queries on both):
  - `null` means "missing or null": `{"wb97mv.wb97md3bj": null}` selects records lacking that
    result. `$ne: null` selects records where it is present and not null; `$exists: true`
    selects present values, null included; `$exists: false` only missing ones.
  - `$ne` and `$nin` match records where the path is missing (as MongoDB does), unless the
    list holds null.
  - Equality and comparisons are type-bracketed: a number never equals a string ("1" != 1), a
    boolean is not a number (true != 1; `$gt: 0` does not select true), 1 equals 1.0.
    `$gt`/`$gte`/`$lt`/`$lte` take a number (compared numerically with numbers) or a string
    (compared by code point with strings); null, booleans, arrays and objects are refused.
  - Arrays: equality to an array compares the whole array (same length, equal elements in
    order); there is no element matching, so `{"tags": "x"}` does not select `["x", "y"]` and
    `$elemMatch` is refused. Equality to an object compares the whole object (same keys, equal
    values; unlike MongoDB, key order does not matter).
  - Anything outside the subset ($regex, $where, $elemMatch, $type, $not, an unknown $foo) is an
    error naming the operator and the path and listing what is supported; never ignored.
See docs/query.md for examples.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import reduce
from operator import and_, or_
from typing import Any

from django.db import NotSupportedError
from django.db.models import BooleanField, F, Func, Q

from campaigns.bounds import depth_message, max_json_depth, too_deep
from campaigns.errors import QueryError

FIELD_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
TOP_OPERATORS = ("$and", "$or")
COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
ID_PATH = "id"
INPUT_PREFIX = "input"
MAX_INT = 2**63 - 1  # SQLite integers are 64-bit

MATCH_ALL = Q(pk__isnull=False)
MATCH_NONE = Q(pk__isnull=True)


@dataclass(frozen=True)
class Path:
    text: str  # as the user wrote it, for messages
    column: str  # "record_id", "input" or "results"
    keys: tuple[str | int, ...]  # str: an object key; int: an array index

    def child(self, key: str | int) -> Path:
        return Path(f"{self.text}.{key}", self.column, (*self.keys, key))


def validate_query(query: Any) -> None:
    """Raise QueryError if `query` is outside the supported subset; return None otherwise."""
    compile_query(query)


def compile_query(query: Any) -> Q:
    """The Q object selecting the records that `query` selects; QueryError if unsupported."""
    if not isinstance(query, dict):
        raise QueryError(f"a query must be a JSON object, got {_kind(query)}")
    # The compiler recurses once a level: bound the depth first, so that a deep query is a
    # QueryError naming the limit, never a RecursionError (a 500).
    if too_deep(query, limit=max_json_depth()):
        raise QueryError(f"the query is {depth_message(limit=max_json_depth())}")
    if not query:
        return MATCH_ALL
    return reduce(and_, (_clause(key, value) for key, value in query.items()))


def parse_path(text: Any) -> Path:
    if not isinstance(text, str) or not text:
        raise QueryError(f"a path must be a non-empty string, got {text!r}")
    segments = text.split(".")
    for segment in segments:
        if not segment:
            raise QueryError(f"path {text!r}: empty segment (write dotted keys, e.g. "
                             "wb97mv.wb97md3bj)")
        _check_key(segment, text)
    if segments[0] == ID_PATH:
        if len(segments) > 1:
            raise QueryError(f"path {text!r}: id is a string and has no keys")
        return Path(text, "record_id", ())
    column = "input" if segments[0] == INPUT_PREFIX else "results"
    keys = segments[1:] if column == "input" else segments
    return Path(text, column, tuple(int(k) if k.isdigit() else k for k in keys))


def _check_key(key: str, where: str) -> None:
    if key.startswith("$"):
        raise QueryError(f"path {where!r}: a key may not start with $ ({key!r})")
    if '"' in key or "\\" in key:
        raise QueryError(f"path {where!r}: a key may not contain \" or \\ ({key!r})")


def _kind(value: Any) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string",
                                         bool: "a boolean"}.get(type(value), json.dumps(value))


def _clause(key: Any, value: Any) -> Q:
    if key in TOP_OPERATORS:
        if not isinstance(value, list) or not value:
            raise QueryError(f"{key} needs a non-empty list of queries, got {_kind(value)}")
        return reduce(and_ if key == "$and" else or_, (compile_query(q) for q in value))
    if isinstance(key, str) and key.startswith("$"):
        raise QueryError(f"unsupported operator {key!r} at the top level (supported there: "
                         f"{', '.join(TOP_OPERATORS)}; on a path: {', '.join(FIELD_OPERATORS)})")
    path = parse_path(key)
    if isinstance(value, dict) and any(str(k).startswith("$") for k in value):
        plain = [k for k in value if not str(k).startswith("$")]
        if plain:
            raise QueryError(f"{path.text!r}: mixes operators with plain keys ({', '.join(plain)})"
                             "; write one or the other")
        return reduce(and_, (_operator(path, op, operand) for op, operand in value.items()))
    return _equals(path, value, nested=False)


def _operator(path: Path, op: str, operand: Any) -> Q:
    if op == "$eq":
        return _equals(path, operand, nested=False)
    if op == "$ne":
        return ~_equals(path, operand, nested=False)
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise QueryError(f"{op!r} at {path.text!r} needs a list, got {_kind(operand)}")
        matched = reduce(or_, (_equals(path, v, nested=False) for v in operand), MATCH_NONE)
        return matched if op == "$in" else ~matched
    if op == "$exists":
        if not isinstance(operand, bool):
            raise QueryError(f"'$exists' at {path.text!r} needs true or false, "
                             f"got {_kind(operand)}")
        present = MATCH_ALL if path.column == "record_id" else Q(_Test(path, "present"))
        return present if operand else ~present
    if op in COMPARISONS:
        if isinstance(operand, bool) or not isinstance(operand, (int, float, str)):
            raise QueryError(f"{op!r} at {path.text!r} needs a number or a string, "
                             f"got {_kind(operand)}")
        _check_scalar(path, operand)
        if path.column == "record_id" and not isinstance(operand, str):
            raise QueryError(f"{op!r} at 'id' needs a string (ids are strings), got {operand}")
        return Q(_Test(path, "compare", operand, COMPARISONS[op]))
    raise QueryError(f"unsupported operator {op!r} at {path.text!r} (supported: "
                     f"{', '.join(FIELD_OPERATORS)}; at the top level: {', '.join(TOP_OPERATORS)})")


def _check_scalar(path: Path, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"{path.text!r}: {value} is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise QueryError(f"{path.text!r}: {value} is outside the 64-bit integer range")


def _equals(path: Path, value: Any, *, nested: bool) -> Q:
    """Records whose value at `path` equals `value` (null: missing or null, unless nested)."""
    if path.column == "record_id":
        if value is None:
            return MATCH_NONE
        if not isinstance(value, str):
            raise QueryError(f"'id' is compared with strings (ids are strings), got {_kind(value)}")
        return Q(record_id=value)
    if value is None:
        return Q(_Test(path, "null" if nested else "absent"))
    if isinstance(value, (bool, int, float, str)):
        _check_scalar(path, value)
        return Q(_Test(path, "equals", value))
    if isinstance(value, list):
        return reduce(and_, (_equals(path.child(i), v, nested=True) for i, v in enumerate(value)),
                      Q(_Test(path, "array_length", len(value))))
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or not key:
                raise QueryError(f"{path.text!r}: object keys must be non-empty strings")
            if key.startswith("$"):
                raise QueryError(f"{path.text!r}: operator {key!r} inside a value; operators "
                                 "go right under a path")
            _check_key(key, path.text)
        return reduce(and_, (_equals(path.child(k), v, nested=True) for k, v in value.items()),
                      Q(_Test(path, "object_size", len(value))))
    raise QueryError(f"{path.text!r}: cannot compare with {value!r}")


PRESENCE_TESTS = ("absent", "null", "present")


def _presence_sql(test: str, kind: str) -> str:
    """Missing-or-null, null, or present, from SQL giving the JSON type name (or NULL when
    missing): SQLite's JSON_TYPE and PostgreSQL's jsonb_typeof both name null 'null'."""
    return {"absent": f"(COALESCE({kind}, 'null') = 'null')",
            "null": f"(COALESCE({kind}, '') = 'null')",
            "present": f"({kind} IS NOT NULL)"}[test]


class _Test(Func):
    """One SQL condition on a JSON path, written out for each database so both agree.

    The condition is never SQL NULL (a missing path gives false), so NOT of it is exact.
    """

    output_field = BooleanField()

    def __init__(self, path: Path, test: str, value: Any = None, comparison: str = "="):
        super().__init__(F(path.column))
        self.path, self.test, self.value, self.comparison = path, test, value, comparison

    def as_sql(self, compiler, connection, **extra):
        raise NotSupportedError(f"the query language runs on SQLite and PostgreSQL, "
                                f"not {connection.vendor}")

    def as_sqlite(self, compiler, connection, **extra):
        col, col_params = compiler.compile(self.source_expressions[0])
        if self.path.column == "record_id":  # the column's collation is BINARY: code points
            return f"({col} {self.comparison} %s)", (*col_params, self.value)
        json_path = "$" + "".join(f"[{k}]" if isinstance(k, int) else f'."{k}"'
                                  for k in self.path.keys)
        kind = f"JSON_TYPE({col}, %s)"
        kind_params = (*col_params, json_path)
        value = f"JSON_EXTRACT({col}, %s)"
        if self.test in PRESENCE_TESTS:
            return _presence_sql(self.test, kind), kind_params
        if self.test == "equals" and isinstance(self.value, bool):
            return f"(COALESCE({kind}, '') = %s)", (*kind_params, "true" if self.value else "false")
        if self.test in ("equals", "compare"):
            types = "'text'" if isinstance(self.value, str) else "'integer', 'real'"
            return (f"COALESCE({kind} IN ({types}) AND {value} {self.comparison} %s, 0)",
                    (*kind_params, *kind_params, self.value))
        size = (f"JSON_ARRAY_LENGTH({col}, %s)" if self.test == "array_length"
                else f"(SELECT COUNT(*) FROM JSON_EACH({col}, %s))")
        container = "array" if self.test == "array_length" else "object"
        return (f"COALESCE({kind} = '{container}' AND {size} = %s, 0)",
                (*kind_params, *kind_params, self.value))

    def as_postgresql(self, compiler, connection, **extra):
        col, col_params = compiler.compile(self.source_expressions[0])
        if self.path.column == "record_id":  # "C": code points, as SQLite and MongoDB compare
            return f'({col} COLLATE "C" {self.comparison} %s)', (*col_params, self.value)
        at = "(" + col + "".join(" -> %s::int" if isinstance(k, int) else " -> %s::text"
                                 for k in self.path.keys) + ")"
        at_params = (*col_params, *self.path.keys)
        kind = f"jsonb_typeof({at})"
        if self.test in PRESENCE_TESTS:
            return _presence_sql(self.test, kind), at_params
        if self.test == "equals":  # jsonb equality is type-strict, and numeric for numbers
            return f"COALESCE({at} = %s::jsonb, FALSE)", (*at_params, json.dumps(self.value))
        if self.test == "compare" and isinstance(self.value, str):
            return (f"(CASE WHEN {kind} = 'string' THEN ({at} #>> '{{}}') COLLATE \"C\" "
                    f"{self.comparison} %s ELSE FALSE END)", (*at_params, *at_params, self.value))
        if self.test == "compare":
            return (f"(CASE WHEN {kind} = 'number' THEN ({at})::numeric {self.comparison} "
                    "%s::numeric ELSE FALSE END)", (*at_params, *at_params, repr(self.value)))
        size = (f"jsonb_array_length({at})" if self.test == "array_length"
                else f"(SELECT COUNT(*) FROM jsonb_object_keys({at}))")
        container = "array" if self.test == "array_length" else "object"
        return (f"(CASE WHEN {kind} = '{container}' THEN {size} = %s ELSE FALSE END)",
                (*at_params, *at_params, self.value))
