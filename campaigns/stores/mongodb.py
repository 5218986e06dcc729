"""A record store on a MongoDB collection, one document per record:

    {"_id": <record id>, "input": {...}, <output_key>: {<arg_set>: <result>}, ...}

Results sit at the top level, as the original system stored them, so a query passes through as
a native MongoDB filter once validated; the only rewrite is the path `id` to `_id`.
"""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pymongo
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import (BulkWriteError, ConfigurationError, ConnectionFailure,
                            OperationFailure)

from campaigns.errors import ApplicationError
from campaigns.models import Dataset
from campaigns.query import ID_PATH
from campaigns.stores import RecordStore, ResultUpdate, cut_input, not_an_object

SERVER_SELECTION_TIMEOUT_MS = 5000
# What makes a client; the tests put mongomock.MongoClient here.
client_factory: Callable[..., Any] = pymongo.MongoClient

_clients: dict[tuple[Callable[..., Any], str], Any] = {}
_clients_lock = threading.Lock()


def client_for(uri: str) -> Any:
    """One client per URI (and factory) for the process: a MongoClient is a connection pool."""
    key = (client_factory, uri)
    with _clients_lock:
        if key not in _clients:
            with _answering(uri):
                _clients[key] = client_factory(
                    uri, serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
                    appname="htportal", tz_aware=True,
                )
        return _clients[key]


def without_password(uri: str) -> str:
    """The URI without its user:password@ part, fit for messages and logs."""
    return re.sub(r"^([a-z+]+://)[^@/]*@", r"\1", uri)


@contextmanager
def _answering(uri: str, where: str = "") -> Iterator[None]:
    """Turn pymongo's failures to reach or use the server into an ApplicationError that names
    the server but never the password in the URI."""
    server = without_password(uri)
    try:
        yield
    except ConfigurationError as exc:
        raise ApplicationError(f"MongoDB URI {server!r}{where} cannot be used: "
                               f"{_scrubbed(exc, uri)}") from None
    except ConnectionFailure as exc:
        raise ApplicationError(
            f"MongoDB at {server}{where} did not answer within "
            f"{SERVER_SELECTION_TIMEOUT_MS / 1000:g} s: {_scrubbed(exc, uri)}"
        ) from None
    except BulkWriteError:
        raise  # a document refused an update: the caller knows which and why
    except OperationFailure as exc:
        raise ApplicationError(f"MongoDB at {server}{where} refused: "
                               f"{_scrubbed(exc, uri)}") from None


def _scrubbed(exc: Exception, uri: str) -> str:
    text = str(exc).split(", Timeout:")[0]  # pymongo appends its whole topology description
    password = re.match(r"^[a-z+]+://[^:@/]*:([^@/]*)@", uri)
    return text.replace(password.group(1), "***") if password and password.group(1) else text


def native_filter(query: dict) -> dict:
    """The validated query as a MongoDB filter: `id` becomes `_id`, all else is native."""
    native = {}
    for key, value in query.items():
        if key in ("$and", "$or"):
            value = [native_filter(part) for part in value]
        native["_id" if key == ID_PATH else key] = value
    return native


class MongoRecordStore(RecordStore):
    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset)
        missing = [what for what, value in (("URI", dataset.mongo_uri),
                                            ("database", dataset.mongo_database),
                                            ("collection", dataset.mongo_collection)) if not value]
        if missing:
            raise ApplicationError(f"dataset {dataset.name}: a MongoDB store needs its MongoDB "
                                   f"{', '.join(missing)}")
        self.collection: Collection = client_for(dataset.mongo_uri)[
            dataset.mongo_database][dataset.mongo_collection]

    @contextmanager
    def _talking(self) -> Iterator[None]:
        where = f" (dataset {self.dataset.name}, collection {self.collection.full_name})"
        with _answering(self.dataset.mongo_uri, where):
            yield

    def _count(self, query: dict) -> int:
        with self._talking():
            return self.collection.count_documents(native_filter(query))

    def _id_page(self, query: dict, after: str | None, limit: int) -> list[str]:
        selected = native_filter(query)
        if after is not None:
            selected = {"$and": [selected, {"_id": {"$gt": after}}]}
        with self._talking():
            # Sorted on _id with a range on _id: MongoDB walks its own _id index.
            cursor = self.collection.find(selected, {"_id": 1}).sort("_id", 1).limit(limit)
            return [doc["_id"] for doc in cursor]

    def _inputs(self, ids: list[str], fields: list[str] | None) -> dict[str, dict]:
        projection = {"input": 1} if fields is None else {f"input.{f}": 1 for f in fields}
        with self._talking():
            docs = list(self.collection.find({"_id": {"$in": ids}}, projection))
        # cut_input again: a projection on "input.x" of a record whose input is not an object
        # would hand back whatever is there.
        return {doc["_id"]: cut_input(doc.get("input") or {}, fields) for doc in docs}

    def _existing(self, ids: list[str]) -> set[str]:
        with self._talking():
            return {doc["_id"] for doc in self.collection.find({"_id": {"$in": ids}}, {"_id": 1})}

    def _write_results(self, updates: list[ResultUpdate]) -> int:
        operations = [
            UpdateOne({"_id": u.record_id}, {"$set": {f"{u.output_key}.{u.arg_set}": u.value}})
            for u in updates
        ]
        # Unordered: one bad document does not hold back the others, and the server may apply
        # them in parallel. No upsert: an unknown id is counted out, not created.
        try:
            with self._talking():
                return self.collection.bulk_write(operations, ordered=False).matched_count
        except BulkWriteError as exc:
            # The usual cause: a top-level field of that name that is not an object, e.g. a
            # scalar the original system stored there.
            first = updates[exc.details["writeErrors"][0]["index"]]
            raise ApplicationError(not_an_object(first, self.dataset.name)) from None

    def _insert(self, records: dict[str, dict]) -> int:
        # An upsert that only sets on insert adds the missing ids and leaves the others as they
        # are, in one round trip, with no race between a check and an insert.
        operations = [
            UpdateOne({"_id": record_id}, {"$setOnInsert": {"input": data}}, upsert=True)
            for record_id, data in records.items()
        ]
        with self._talking():
            return self.collection.bulk_write(operations, ordered=False).upserted_count

    def _select(self, query: dict, limit: int) -> list[dict]:
        with self._talking():
            docs = list(self.collection.find(native_filter(query)).sort("_id", 1).limit(limit))
        return [{"id": doc.pop("_id"), "input": doc.pop("input", {}), "results": doc}
                for doc in docs]
