"""Record stores: where a dataset's records live (SQL tables or a MongoDB collection).

The submit, feed and collect services talk to records only through `store_for(dataset)`, so a
campaign runs the same on either store. Every store takes the same query language
(campaigns/query.py, docs/query.md) and validates it the same way before use; see
docs/stores.md for the layouts.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

from campaigns.errors import ApplicationError
from campaigns.query import validate_query

if TYPE_CHECKING:
    from campaigns.models import Dataset

DEFAULT_BATCH_SIZE = 5000
# A worker cannot build a molecule without these, whatever the campaign's projection says.
ALWAYS_SENT = ("elements", "coordinates", "charge", "multiplicity")
# Top-level names a result may not take: in MongoDB they hold the record itself, and in queries
# `id` and `input.<...>` address the record, not its results.
RESERVED_OUTPUT_KEYS = frozenset({"id", "_id", "input"})


@dataclass(frozen=True)
class ResultUpdate:
    """Set record[output_key][arg_set] = value on the record `record_id`."""

    record_id: str
    output_key: str
    arg_set: str
    value: dict

    def __post_init__(self) -> None:
        for what, name in (("output key", self.output_key), ("arg set", self.arg_set)):
            # A dot or a leading $ would turn the MongoDB update path into another path.
            if not isinstance(name, str) or not name or "." in name or name.startswith("$"):
                raise ApplicationError(
                    f"record {self.record_id!r}: {what} {name!r} must be a non-empty name "
                    "without '.' and not starting with '$'"
                )
        if self.output_key in RESERVED_OUTPUT_KEYS:
            raise ApplicationError(
                f"record {self.record_id!r}: output key {self.output_key!r} is reserved "
                f"(reserved: {', '.join(sorted(RESERVED_OUTPUT_KEYS))})"
            )


class RecordStore(ABC):
    """The records of one dataset. Public methods check their arguments, then call the store's
    `_` method, so every store accepts and refuses the same things."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def count(self, *, query: dict) -> int:
        """How many records the query selects."""
        validate_query(query)
        return self._count(query)

    def iter_ids(self, *, query: dict, batch_size: int = DEFAULT_BATCH_SIZE,
                 after: str | None = None) -> Iterator[list[str]]:
        """The ids the query selects, in batches of at most `batch_size`, in the store's id order,
        starting after the id `after` (resume where a previous run stopped).

        Keyset pagination: each batch is one query for ids greater than the last one seen, so
        memory stays at one batch however many records match, and records added or deleted
        meanwhile neither shift nor repeat the others.
        """
        validate_query(query)  # here, not in the generator: a bad query fails at the call
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive whole number (got {batch_size!r})")
        return self._pages(query, batch_size, after)

    def _pages(self, query: dict, batch_size: int, after: str | None) -> Iterator[list[str]]:
        while batch := self._id_page(query, after, batch_size):
            yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1]

    def inputs(self, *, ids: list[str], projection: list[str] | None = None) -> dict[str, dict]:
        """id → the record's input, cut to `projection` (input field names; empty or None: the
        whole input) plus ALWAYS_SENT. Ids that no longer exist are absent."""
        fields = sorted(set(projection) | set(ALWAYS_SENT)) if projection else None
        return self._inputs(list(ids), fields) if ids else {}

    def existing(self, *, ids: list[str]) -> set[str]:
        """The ids among `ids` that name a record of this dataset."""
        return self._existing(list(ids)) if ids else set()

    def write_results(self, *, updates: list[ResultUpdate]) -> int:
        """Set record[output_key][arg_set] = value for each update, leaving the record's other
        results untouched. Idempotent. Returns how many updates found their record; updates
        for unknown ids are ignored (the difference to len(updates) tells the caller)."""
        return self._write_results(list(updates)) if updates else 0

    def insert(self, *, records: list[dict]) -> int:
        """Add records {"id", "input"}; ids that exist already (in the store or earlier in the
        list) are skipped. Returns how many were added."""
        new = _unique_records(records)
        return self._insert(new) if new else 0

    def select(self, *, query: dict, limit: int) -> list[dict]:
        """Up to `limit` records the query selects, in id order, as {"id", "input", "results"}."""
        validate_query(query)
        return self._select(query, limit) if limit > 0 else []

    @abstractmethod
    def _count(self, query: dict) -> int: ...

    @abstractmethod
    def _id_page(self, query: dict, after: str | None, limit: int) -> list[str]:
        """Up to `limit` selected ids greater than `after` (None: from the first), in order."""

    @abstractmethod
    def _inputs(self, ids: list[str], fields: list[str] | None) -> dict[str, dict]: ...

    @abstractmethod
    def _existing(self, ids: list[str]) -> set[str]: ...

    @abstractmethod
    def _write_results(self, updates: list[ResultUpdate]) -> int: ...

    @abstractmethod
    def _insert(self, records: dict[str, dict]) -> int: ...

    @abstractmethod
    def _select(self, query: dict, limit: int) -> list[dict]: ...


def store_for(dataset: Dataset, *, using: str = "default") -> RecordStore:
    """The store of the dataset's records. `using`: the Django database alias of a SQL store."""
    # Imported here: the MongoDB store pulls in pymongo, which a SQL-only portal never needs.
    if dataset.store == "mongodb":
        from campaigns.stores.mongodb import MongoRecordStore
        return MongoRecordStore(dataset)
    from campaigns.stores.sql import SqlRecordStore
    return SqlRecordStore(dataset, using=using)


def not_an_object(update: ResultUpdate, dataset: str) -> str:
    return (f"dataset {dataset}: record {update.record_id!r}: {update.output_key!r} holds "
            f"something other than an object, so result {update.output_key}.{update.arg_set} "
            "cannot be written there (choose another output key)")


def cut_input(data: dict, fields: list[str] | None) -> dict:
    """The input with only `fields` (None: all of it)."""
    return dict(data) if fields is None else {k: v for k, v in data.items() if k in fields}


def chunked(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _unique_records(records: Iterable[dict]) -> dict[str, dict]:
    """{id: input}, first occurrence of an id kept; ApplicationError on a malformed record."""
    unique: dict[str, dict] = {}
    for position, record in enumerate(records, start=1):
        record_id = record.get("id") if isinstance(record, dict) else None
        data = record.get("input") if isinstance(record, dict) else None
        if not isinstance(record_id, str) or not record_id or not isinstance(data, dict):
            raise ApplicationError(
                f"record {position}: needs a non-empty text 'id' and an 'input' object "
                f"(got {record!r:.200})"
            )
        unique.setdefault(record_id, data)
    return unique
