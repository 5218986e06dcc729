"""The record stores: every test runs on each store (SQL on SQLite, SQL on PostgreSQL, MongoDB
through mongomock, and MongoDB on a real server when HTPORTAL_TEST_MONGODB_URL is set)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

import mongomock
import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from campaigns.errors import ApplicationError, QueryError
from campaigns.models import Dataset, Record
from campaigns.stores import ResultUpdate, mongodb, store_for
from campaigns.stores.mongodb import MongoRecordStore, native_filter
from campaigns.stores.sql import SqlRecordStore
from tests import servers
from tests.campaigns.test_stores_mongodb_live import LIVE_DATABASE, LIVE_STORE_PARAMS, LIVE_URL

pytestmark = pytest.mark.django_db(databases=["default", "postgres"])

IDS = [f"m{i:02d}" for i in range(12)]
MOLECULE = {"elements": ["H", "H"], "coordinates": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]],
            "charge": 0, "multiplicity": 1}
GFN2 = {"energy": -1.03, "unit": "Eh"}
GFN1 = {"energy": -1.01, "unit": "Eh"}
UNSUPPORTED = {"input.smiles": {"$regex": "^C"}}


def molecule(n: int) -> dict:
    return {**MOLECULE, "smiles": "[H][H]", "source": "test", "n": n}


@dataclass
class Case:
    store: SqlRecordStore | MongoRecordStore
    delete: Callable[[list[str]], None]  # deletes records behind the store's back
    plant: Callable[[str, str, object], None]  # sets a top-level result field behind its back


def sql_case(alias: str) -> Case:
    dataset = Dataset.objects.using(alias).create(name="stored")
    records = Record.objects.using(alias).filter(dataset=dataset)
    return Case(store_for(dataset, using=alias),
                lambda ids: records.filter(record_id__in=ids).delete(),
                lambda i, key, value: records.filter(record_id=i).update(results={key: value}))


def mongo_case(uri: str, database: str) -> Case:
    dataset = Dataset(name="stored", store=Dataset.Store.MONGODB, mongo_uri=uri,
                      mongo_database=database, mongo_collection=f"records_{uuid.uuid4().hex}")
    store = store_for(dataset)
    return Case(store, lambda ids: store.collection.delete_many({"_id": {"$in": ids}}),
                lambda i, key, value: store.collection.update_one({"_id": i},
                                                                  {"$set": {key: value}}))


def mongomock_add_update_without_sort(monkeypatch):
    """pymongo 4.9+ hands UpdateOne's `sort` to the bulk builder, which mongomock 4.3 does not
    take (mongomock/mongomock#912); we never sort an update, so drop the None it gets."""
    builder = mongomock.collection.BulkOperationBuilder
    original = builder.add_update

    def add_update(self, *args, sort=None, **kwargs):
        assert sort is None
        return original(self, *args, **kwargs)

    monkeypatch.setattr(builder, "add_update", add_update)


@pytest.fixture(params=["sql-sqlite", "sql-postgres", "mongomock", *LIVE_STORE_PARAMS])
def case(request, monkeypatch):
    if request.param == "sql-sqlite":
        yield sql_case("default")
    elif request.param == "sql-postgres":
        yield sql_case("postgres")
    else:
        if request.param == "mongomock":
            monkeypatch.setattr(mongodb, "client_factory", mongomock.MongoClient)
            mongomock_add_update_without_sort(monkeypatch)
            made = mongo_case("mongodb://mongomock.invalid:27017/", "htportal_test")
        else:
            made = mongo_case(LIVE_URL, LIVE_DATABASE)
        yield made
        made.store.collection.drop()


@pytest.fixture
def store(case):
    records = [{"id": i, "input": molecule(n)} for n, i in enumerate(IDS)]
    assert case.store.insert(records=records) == 12
    return case.store


def gfn2(record_id: str, value: dict = GFN2) -> ResultUpdate:
    return ResultUpdate(record_id=record_id, output_key="xtb", arg_set="gfn2", value=value)


def record(store, record_id: str) -> dict:
    [found] = store.select(query={"id": record_id}, limit=2)
    return found


# --- count and iter_ids -----------------------------------------------------------------------

def test_it_counts_what_the_query_selects(store):
    assert store.count(query={}) == 12
    assert store.count(query={"input.n": {"$gte": 10}}) == 2
    assert store.count(query={"id": "m03"}) == 1
    assert store.count(query={"$or": [{"id": "m03"}, {"input.n": 7}]}) == 2


def test_a_missing_result_query_drops_records_once_their_result_is_written(store):
    assert store.count(query={"xtb.gfn2": None}) == 12
    store.write_results(updates=[gfn2("m01"), gfn2("m05")])
    assert store.count(query={"xtb.gfn2": None}) == 10
    assert store.count(query={"xtb.gfn2.energy": {"$lt": -1}}) == 2
    remaining = [i for batch in store.iter_ids(query={"xtb.gfn2": None}) for i in batch]
    assert remaining == [i for i in IDS if i not in ("m01", "m05")]


def test_it_yields_ids_in_batches_in_id_order(store):
    assert list(store.iter_ids(query={}, batch_size=5)) == [IDS[0:5], IDS[5:10], IDS[10:12]]


def test_a_full_last_batch_is_not_followed_by_an_empty_one(store):
    assert list(store.iter_ids(query={}, batch_size=4)) == [IDS[0:4], IDS[4:8], IDS[8:12]]


def test_it_resumes_after_an_id(store):
    assert list(store.iter_ids(query={}, batch_size=5, after="m08")) == [["m09", "m10", "m11"]]


def test_it_batches_only_the_selected_ids(store):
    batches = store.iter_ids(query={"input.n": {"$in": [1, 3, 5, 7]}}, batch_size=3)
    assert list(batches) == [["m01", "m03", "m05"], ["m07"]]


def test_batches_go_by_id_not_by_position_when_records_come_and_go(store, case):
    batches = store.iter_ids(query={}, batch_size=5)
    assert next(batches) == IDS[0:5]
    # An offset would now repeat m04 (a00 sorts first) and skip past the deleted m05's place.
    store.insert(records=[{"id": "a00", "input": molecule(0)},
                          {"id": "m04a", "input": molecule(0)}])
    case.delete(["m05"])
    assert list(batches) == [["m04a", "m06", "m07", "m08", "m09"], ["m10", "m11"]]


def test_a_batch_size_below_one_is_refused(store):
    with pytest.raises(ValueError, match="batch_size must be a positive whole number"):
        store.iter_ids(query={}, batch_size=0)


# --- inputs and existing ----------------------------------------------------------------------

def test_it_sends_the_projected_fields_and_always_the_molecule(store):
    assert store.inputs(ids=["m01", "m02"], projection=["smiles"]) == {
        "m01": {**MOLECULE, "smiles": "[H][H]"},
        "m02": {**MOLECULE, "smiles": "[H][H]"},
    }


@pytest.mark.parametrize("projection", [None, []])
def test_no_projection_sends_the_whole_input(store, projection):
    assert store.inputs(ids=["m03"], projection=projection) == {"m03": molecule(3)}


def test_deleted_records_are_absent_from_inputs(store, case):
    case.delete(["m02"])
    assert store.inputs(ids=["m01", "m02", "never"]) == {"m01": molecule(1)}


def test_it_tells_which_ids_exist(store, case):
    case.delete(["m02"])
    assert store.existing(ids=["m01", "m02", "never", "m11"]) == {"m01", "m11"}
    assert store.existing(ids=[]) == set()


# --- write_results ----------------------------------------------------------------------------

def test_writing_a_result_keeps_the_sibling_arg_sets_and_output_keys(store):
    orca = ResultUpdate(record_id="m01", output_key="orca", arg_set="wb97mv",
                        value={"energy": -1.1})
    gfn1 = ResultUpdate(record_id="m01", output_key="xtb", arg_set="gfn1", value=GFN1)
    assert store.write_results(updates=[orca]) == 1
    assert store.write_results(updates=[gfn1]) == 1
    assert store.write_results(updates=[gfn2("m01")]) == 1
    assert record(store, "m01") == {"id": "m01", "input": molecule(1), "results": {
        "orca": {"wb97mv": {"energy": -1.1}}, "xtb": {"gfn1": GFN1, "gfn2": GFN2}}}
    assert record(store, "m02")["results"] == {}


def test_writing_the_same_result_twice_leaves_the_same_record(store):
    store.write_results(updates=[gfn2("m01")])
    once = record(store, "m01")
    assert store.write_results(updates=[gfn2("m01")]) == 1
    assert record(store, "m01") == once


def test_a_new_value_replaces_the_old_one(store):
    store.write_results(updates=[gfn2("m01", {"energy": 0.0, "unit": "Eh"})])
    store.write_results(updates=[gfn2("m01")])
    assert record(store, "m01")["results"] == {"xtb": {"gfn2": GFN2}}


def test_unknown_and_deleted_ids_are_left_out_of_the_count_and_not_created(store, case):
    case.delete(["m02"])
    assert store.write_results(updates=[gfn2("m01"), gfn2("m02"), gfn2("never")]) == 1
    assert store.existing(ids=["m02", "never"]) == set()
    assert store.count(query={"xtb.gfn2": {"$ne": None}}) == 1


def test_two_arg_sets_of_one_record_in_one_call_both_count_and_land(store):
    gfn1 = ResultUpdate(record_id="m01", output_key="xtb", arg_set="gfn1", value=GFN1)
    assert store.write_results(updates=[gfn1, gfn2("m01")]) == 2
    assert record(store, "m01")["results"] == {"xtb": {"gfn1": GFN1, "gfn2": GFN2}}


# Not on mongomock: 4.3 silently drops a $set below a scalar, which MongoDB refuses (code 28).
@pytest.mark.parametrize("case", ["sql-sqlite", "sql-postgres", *LIVE_STORE_PARAMS], indirect=True)
def test_a_result_under_a_field_that_is_no_object_is_refused_naming_the_record(store, case):
    case.plant("m03", "xtb", -1.5)  # as a foreign system may have stored it
    with pytest.raises(ApplicationError, match=r"^dataset stored: record 'm03': 'xtb' holds "
                                               r"something other than an object, so result "
                                               r"xtb.gfn2 cannot be written there"):
        store.write_results(updates=[gfn2("m01"), gfn2("m03")])
    assert record(store, "m03")["results"] == {"xtb": -1.5}


def test_nothing_to_write_writes_nothing(store):
    assert store.write_results(updates=[]) == 0


def test_ids_beyond_one_statement_or_write_batch_are_all_handled(case):
    # SQL splits ids at 500 (SQLite's bulk batch, WRITE_BATCH_SIZE); a lost chunk shows here.
    ids = [f"r{i:04d}" for i in range(777)]
    assert case.store.insert(records=[{"id": i, "input": molecule(0)} for i in ids]) == 777
    assert len(case.store.inputs(ids=ids + ["never"])) == 777
    assert case.store.existing(ids=ids) == set(ids)
    assert case.store.write_results(updates=[gfn2(i) for i in ids]) == 777
    assert case.store.count(query={"xtb.gfn2.unit": "Eh"}) == 777


# --- insert and select ------------------------------------------------------------------------

def test_insert_skips_ids_that_exist(store):
    added = store.insert(records=[{"id": "m01", "input": {**MOLECULE, "n": -1}},
                                  {"id": "n01", "input": molecule(100)},
                                  {"id": "n01", "input": molecule(200)}])
    assert added == 1
    assert store.inputs(ids=["m01", "n01"]) == {"m01": molecule(1), "n01": molecule(100)}
    assert store.count(query={}) == 13


@pytest.mark.parametrize("bad", [{"input": {}}, {"id": "", "input": {}}, {"id": "x", "input": []}])
def test_insert_refuses_a_malformed_record(case, bad):
    with pytest.raises(ApplicationError, match="record 2: needs a non-empty text 'id'"):
        case.store.insert(records=[{"id": "ok", "input": {}}, bad])
    assert case.store.count(query={}) == 0


def test_select_returns_records_in_id_order_up_to_the_limit(store):
    store.write_results(updates=[gfn2("m02")])
    assert store.select(query={"input.n": {"$lt": 5}, "id": {"$ne": "m00"}}, limit=2) == [
        {"id": "m01", "input": molecule(1), "results": {}},
        {"id": "m02", "input": molecule(2), "results": {"xtb": {"gfn2": GFN2}}},
    ]
    assert store.select(query={}, limit=0) == []


# --- queries outside the subset ---------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda store: store.count(query=UNSUPPORTED),
    lambda store: store.iter_ids(query=UNSUPPORTED),  # at the call, before any batch is asked
    lambda store: store.select(query=UNSUPPORTED, limit=5),
    lambda store: store.count(query=["not", "a", "mapping"]),
])
def test_a_query_outside_the_subset_is_refused_by_every_store(store, call):
    with pytest.raises(QueryError, match=r"\$regex|must be a JSON object"):
        call(store)


# --- one store only ---------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["default", "postgres"])
def test_sql_results_roll_back_with_the_callers_transaction(alias):
    case = sql_case(alias)
    case.store.insert(records=[{"id": "m01", "input": molecule(1)}])
    with pytest.raises(RuntimeError), transaction.atomic(using=alias):
        assert case.store.write_results(updates=[gfn2("m01")]) == 1
        raise RuntimeError("the ledger update failed")
    assert record(case.store, "m01")["results"] == {}


@pytest.mark.django_db(databases=["default", "postgres"], transaction=True)
def test_sql_on_postgres_writes_when_the_caller_holds_no_transaction():
    # Row locks need a transaction; the store opens one when the caller has none.
    case = sql_case("postgres")
    case.store.insert(records=[{"id": "m01", "input": molecule(1)}])
    assert case.store.write_results(updates=[gfn2("m01")]) == 1
    assert record(case.store, "m01")["results"] == {"xtb": {"gfn2": GFN2}}


def test_sql_on_postgres_locks_the_rows_and_writes_them_in_one_update():
    case = sql_case("postgres")
    case.store.insert(records=[{"id": i, "input": molecule(0)} for i in IDS])
    with CaptureQueriesContext(connections["postgres"]) as queries:
        case.store.write_results(updates=[gfn2(i) for i in IDS])
    statements = [q["sql"] for q in queries.captured_queries]
    assert [s for s in statements if s.startswith("SELECT")][0].endswith("FOR UPDATE")
    # One UPDATE, run for every row by executemany (logged as "12 times: UPDATE ...").
    assert [s.split(": ", 1)[0] for s in statements if "UPDATE " in s.split(" SET ")[0]
            and not s.startswith("SELECT")] == [f"{len(IDS)} times"]


def test_store_for_picks_the_datasets_store():
    sql = store_for(Dataset(name="d"), using="postgres")
    assert isinstance(sql, SqlRecordStore) and sql.using == "postgres"


def test_a_mongodb_dataset_without_its_collection_is_refused():
    dataset = Dataset(name="d", store=Dataset.Store.MONGODB, mongo_uri="mongodb://h/",
                      mongo_database="db")
    with pytest.raises(ApplicationError, match="dataset d: a MongoDB store needs its MongoDB "
                                               "collection"):
        store_for(dataset)


def test_an_unreachable_mongodb_server_is_named_without_its_password(monkeypatch):
    monkeypatch.setattr(mongodb, "SERVER_SELECTION_TIMEOUT_MS", 300)
    port = servers.free_port()  # nothing listens there
    dataset = Dataset(name="far", store=Dataset.Store.MONGODB,
                      mongo_uri=f"mongodb://alice:s3cret@127.0.0.1:{port}/?authSource=admin",
                      mongo_database="db", mongo_collection="records")
    with pytest.raises(ApplicationError) as error:
        store_for(dataset).count(query={})
    assert str(error.value).startswith(
        f"MongoDB at mongodb://127.0.0.1:{port}/?authSource=admin (dataset far, collection "
        f"db.records) did not answer within 0.3 s: 127.0.0.1:{port}:")
    assert "s3cret" not in str(error.value)


def test_mongodb_filters_pass_through_with_id_renamed():
    query = {"id": {"$gt": "m"}, "input.charge": 0, "xtb.gfn2": None,
             "$or": [{"id": "a"}, {"$and": [{"id": {"$in": ["b"]}}, {"orca.id": 1}]}]}
    assert native_filter(query) == {
        "_id": {"$gt": "m"}, "input.charge": 0, "xtb.gfn2": None,
        "$or": [{"_id": "a"}, {"$and": [{"_id": {"$in": ["b"]}}, {"orca.id": 1}]}],
    }


@pytest.mark.parametrize("output_key, arg_set, message", [
    ("input", "gfn2", "output key 'input' is reserved"),
    ("id", "gfn2", "output key 'id' is reserved"),
    ("xtb.v2", "gfn2", "output key 'xtb.v2' must be a non-empty name without '.'"),
    ("xtb", "$set", "arg set '$set' must be a non-empty name"),
    ("xtb", "", "arg set '' must be a non-empty name"),
])
def test_a_result_update_refuses_names_that_would_land_elsewhere(output_key, arg_set, message):
    with pytest.raises(ApplicationError, match=f"^record 'm01': {message}".replace("$", r"\$")):
        ResultUpdate(record_id="m01", output_key=output_key, arg_set=arg_set, value={})
