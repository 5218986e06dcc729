"""The query language gives the same answers on SQLite and PostgreSQL (docs/query.md)."""
from __future__ import annotations

import pytest

from campaigns.errors import QueryError
from campaigns.models import Dataset, Record
from campaigns.query import compile_query, validate_query
from campaigns.record_selectors import records_matching

ALIASES = ["default", "postgres"]

# record id: (input, results)
RECORDS = {
    "r1": ({"charge": 0, "source": "g2"},
           {"wb97mv": {"wb97md3bj": {"energy": -76.4, "converged": True}}, "tag": "a", "n": 1,
            "flag": True, "arr": [1, 2, 3]}),
    "r2": ({"charge": 1, "source": "zinc"},
           {"wb97mv": {"wb97md3bj": None}, "tag": "b", "n": 2.5, "flag": False, "arr": [1, 2]}),
    "r3": ({"charge": -1},
           {"tag": "1", "n": "1", "flag": 1, "obj": {"x": 1, "y": [1, 2]}, "arr": [[1, 2], [3]]}),
    "r4": ({"charge": 0, "source": None}, {}),
    "r5": ({"charge": 0, "source": "g2"},
           {"wb97mv": {"wb97md3bj": {"energy": -40.1, "converged": False}}, "tag": "B", "n": -3,
            "flag": None}),
    # wb97mv is a string here: the path wb97mv.wb97md3bj goes through a scalar and is missing.
    "r6": ({"charge": 2},
           {"wb97mv": "wb97md3bj", "tag": "é", "n": 10.0, "obj": {"y": [1, 2], "x": 1.0}}),
}
ALL = "r1 r2 r3 r4 r5 r6"

CASES = [
    ({}, ALL),
    # null: missing or null; $exists; $ne null
    ({"wb97mv.wb97md3bj": None}, "r2 r3 r4 r6"),
    ({"wb97mv.wb97md3bj": {"$eq": None}}, "r2 r3 r4 r6"),
    ({"wb97mv.wb97md3bj": {"$exists": True}}, "r1 r2 r5"),
    ({"wb97mv.wb97md3bj": {"$exists": False}}, "r3 r4 r6"),
    ({"wb97mv.wb97md3bj": {"$ne": None}}, "r1 r5"),
    ({"wb97mv": {"$exists": True}}, "r1 r2 r5 r6"),
    ({"missing.deep.path": None}, ALL),
    # nested results paths, numbers, booleans
    ({"wb97mv.wb97md3bj.energy": {"$lt": -50}}, "r1"),
    ({"wb97mv.wb97md3bj.energy": {"$gt": -50}}, "r5"),
    ({"wb97mv.wb97md3bj.converged": True}, "r1"),
    ({"wb97mv.wb97md3bj.converged": False}, "r5"),
    ({"wb97mv": "wb97md3bj"}, "r6"),
    ({"flag": True}, "r1"),
    ({"flag": 1}, "r3"),
    ({"flag": {"$gt": 0}}, "r3"),
    ({"flag": None}, "r4 r5 r6"),
    ({"flag": {"$ne": True}}, "r2 r3 r4 r5 r6"),
    ({"n": 1}, "r1"),
    ({"n": "1"}, "r3"),
    ({"n": 10}, "r6"),
    ({"n": {"$eq": 2.5}}, "r2"),
    ({"n": {"$ne": 1}}, "r2 r3 r4 r5 r6"),
    ({"n": {"$gt": 1}}, "r2 r6"),
    ({"n": {"$gte": 1, "$lt": 10}}, "r1 r2"),
    ({"n": {"$lte": -3}}, "r5"),
    # strings: type-bracketed, compared by code point ("B" < "a" < "b" < "é")
    ({"tag": "1"}, "r3"),
    ({"tag": 1}, ""),
    ({"tag": {"$gt": "a"}}, "r2 r6"),
    ({"tag": {"$lt": "a"}}, "r3 r5"),
    ({"tag": {"$gte": "b", "$lte": "b"}}, "r2"),
    ({"tag": {"$ne": "a"}}, "r2 r3 r4 r5 r6"),
    # $in / $nin, with null inside, empty
    ({"tag": {"$in": ["a", "B"]}}, "r1 r5"),
    ({"tag": {"$in": ["a", None]}}, "r1 r4"),
    ({"tag": {"$nin": ["a", "b"]}}, "r3 r4 r5 r6"),
    ({"tag": {"$nin": ["a", None]}}, "r2 r3 r5 r6"),
    ({"tag": {"$in": []}}, ""),
    ({"tag": {"$nin": []}}, ALL),
    # input paths
    ({"input.charge": 0}, "r1 r4 r5"),
    ({"input.charge": {"$gt": 0}}, "r2 r6"),
    ({"input.source": None}, "r3 r4 r6"),
    ({"input.source": {"$exists": True}}, "r1 r2 r4 r5"),
    ({"input.source": "g2", "wb97mv.wb97md3bj.energy": {"$gt": -50}}, "r5"),
    # $and / $or nesting
    ({"$or": [{"tag": "a"}, {"n": {"$lt": 0}}]}, "r1 r5"),
    ({"$and": [{"input.charge": 0}, {"$or": [{"flag": None}, {"tag": "a"}]}]}, "r1 r4 r5"),
    ({"$or": [{"$and": [{"n": {"$gt": 0}}, {"input.charge": {"$ne": 0}}]}, {"id": "r4"}]},
     "r2 r4 r6"),
    ({"$or": [{}, {"tag": "zzz"}]}, ALL),
    # arrays and objects: whole-value equality, positions by index, no element matching
    ({"arr": [1, 2]}, "r2"),
    ({"arr": 1}, ""),
    ({"arr.0": 1}, "r1 r2"),
    ({"arr.0": [1, 2]}, "r3"),
    ({"arr.2": {"$exists": True}}, "r1"),
    ({"obj": {"x": 1, "y": [1, 2]}}, "r3 r6"),
    ({"obj": {"x": 1}}, ""),
    ({"obj.y.1": 2}, "r3 r6"),
    # the record id
    ({"id": "r2"}, "r2"),
    ({"id": {"$in": ["r1", "r3", "zz"]}}, "r1 r3"),
    ({"id": {"$nin": ["r1"]}}, "r2 r3 r4 r5 r6"),
    ({"id": {"$gt": "r4"}}, "r5 r6"),
    ({"id": None}, ""),
    ({"id": {"$exists": True}}, ALL),
]


@pytest.fixture
def dataset_at():
    def make(alias: str) -> Dataset:
        dataset = Dataset.objects.using(alias).create(name="query-table")
        Record.objects.using(alias).bulk_create(
            Record(dataset=dataset, record_id=rid, input=inp, results=res)
            for rid, (inp, res) in RECORDS.items()
        )
        return dataset
    return make


@pytest.mark.django_db(databases=ALIASES)
@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize(("query", "expected"), CASES, ids=[str(q) for q, _ in CASES])
def test_it_selects_the_same_records_on_both_databases(dataset_at, alias, query, expected):
    dataset = dataset_at(alias)
    found = records_matching(dataset=dataset, query=query, using=alias)
    assert sorted(found.values_list("record_id", flat=True)) == expected.split()


SUPPORTED = ("(supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists; "
             "at the top level: $and, $or)")

ERRORS = [
    ({"tag": {"$regex": "^a"}}, f"unsupported operator '$regex' at 'tag' {SUPPORTED}"),
    ({"arr": {"$elemMatch": {"$gt": 1}}}, f"unsupported operator '$elemMatch' at 'arr' {SUPPORTED}"),
    ({"n": {"$type": "number"}}, f"unsupported operator '$type' at 'n' {SUPPORTED}"),
    ({"n": {"$not": {"$gt": 1}}}, f"unsupported operator '$not' at 'n' {SUPPORTED}"),
    ({"$or": [{"a.b": {"$foo": 1}}]}, f"unsupported operator '$foo' at 'a.b' {SUPPORTED}"),
    ({"$where": "this.n > 1"}, "unsupported operator '$where' at the top level (supported there: "
                               "$and, $or; on a path: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, "
                               "$exists)"),
    ([{"tag": "a"}], "a query must be a JSON object, got a list"),
    ({"$or": [1]}, "a query must be a JSON object, got 1"),
    ({"a..b": 1}, "path 'a..b': empty segment (write dotted keys, e.g. wb97mv.wb97md3bj)"),
    ({".a": 1}, "path '.a': empty segment (write dotted keys, e.g. wb97mv.wb97md3bj)"),
    ({"": 1}, "a path must be a non-empty string, got ''"),
    ({"a.$b": 1}, "path 'a.$b': a key may not start with $ ('$b')"),
    ({"id.x": "a"}, "path 'id.x': id is a string and has no keys"),
    ({"$and": []}, "$and needs a non-empty list of queries, got a list"),
    ({"$or": {"tag": "a"}}, "$or needs a non-empty list of queries, got an object"),
    ({"tag": {"$in": "a"}}, "'$in' at 'tag' needs a list, got a string"),
    ({"tag": {"$exists": 1}}, "'$exists' at 'tag' needs true or false, got 1"),
    ({"n": {"$gt": True}}, "'$gt' at 'n' needs a number or a string, got a boolean"),
    ({"n": {"$lt": None}}, "'$lt' at 'n' needs a number or a string, got null"),
    ({"n": {"$gte": [1]}}, "'$gte' at 'n' needs a number or a string, got a list"),
    ({"obj": {"$gt": 1, "x": 2}}, "'obj': mixes operators with plain keys (x); write one or the "
                                  "other"),
    ({"obj": {"x": {"$gt": 1}}}, "'obj.x': operator '$gt' inside a value; operators go right "
                                 "under a path"),
    ({"id": 5}, "'id' is compared with strings (ids are strings), got 5"),
    ({"id": {"$lt": 5}}, "'$lt' at 'id' needs a string (ids are strings), got 5"),
    ({"n": float("nan")}, "'n': nan is not a finite number"),
]


@pytest.mark.parametrize(("query", "message"), ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_it_refuses_what_is_outside_the_subset(query, message):
    with pytest.raises(QueryError) as caught:
        validate_query(query)
    assert str(caught.value) == message
    with pytest.raises(QueryError):
        compile_query(query)


def test_validate_query_accepts_every_supported_case():
    for query, _ in CASES:
        assert validate_query(query) is None


def nested(depth: int) -> dict:
    query: dict = {"wb97mv.wb97md3bj": None}
    for _ in range(depth):
        query = {"$or": [query]}
    return query


def test_a_query_nested_past_the_limit_is_a_query_error_naming_it():
    with pytest.raises(QueryError) as caught:
        compile_query(nested(200))
    assert str(caught.value) == ("the query is nested deeper than the limit of 64 "
                                 "(HTPORTAL_MAX_JSON_DEPTH)")


def test_a_query_nested_far_past_pythons_recursion_limit_is_refused_too():
    with pytest.raises(QueryError):
        compile_query(nested(5000))


def test_a_query_just_within_the_limit_compiles():
    compile_query(nested(31))  # {"$or": [ ... ]} is two levels a step: 63 levels
