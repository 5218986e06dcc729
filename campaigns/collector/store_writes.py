"""Writing what results carry: kept files to storage, values to the record store.

A failure here is told apart by what it means:
- StoreDown: the store or the storage cannot be reached now (MongoDB not answering, a disk
  full or read-only, S3 unreachable). The results wait in Redis (retries.py) and nothing is
  counted against their tasks.
- anything else the store or storage raises for one result (a key or a value it refuses, a
  file name it will not take): that result's task fails with StoreError or StorageError, the
  others go on.
A lost database connection is neither: DB_ERRORS propagate and pause the whole collector.
"""
from __future__ import annotations

import errno
import logging

from django.db import InterfaceError, OperationalError

from campaigns.collector.outcomes import MESSAGE_CHARS, Outcome
from campaigns.services.kept_files import kept_file_save
from campaigns.stores import ResultUpdate, store_for
from workers.runtime import keepfiles
from workers.runtime.errors import KeepFileError

log = logging.getLogger(__name__)

DB_ERRORS = (OperationalError, InterfaceError)
# errno values that mean "the storage is not there now", not "this file is refused".
OUTAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES,
                           errno.EPERM, errno.ENOTCONN, errno.ECONNREFUSED, errno.ECONNRESET,
                           errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH,
                           errno.ESTALE})
# Exception class names (anywhere in an exception's chain) of clients that could not reach
# their server: pymongo, botocore.
OUTAGE_NAMES = frozenset({"ConnectionFailure", "AutoReconnect", "ServerSelectionTimeoutError",
                          "NetworkTimeout", "EndpointConnectionError", "ConnectTimeoutError",
                          "ReadTimeoutError", "ConnectionClosedError"})


class StoreDown(Exception):
    """The dataset's store or the storage is unreachable now: try its results again later."""


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from or while handling) says the other
    side cannot be reached, as opposed to refusing this one request."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if isinstance(exc, OSError) and exc.errno in OUTAGE_ERRNOS:
            return True
        if any(cls.__name__ in OUTAGE_NAMES for cls in type(exc).__mro__):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def reason_of(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"[:MESSAGE_CHARS] if message else type(exc).__name__


def kept_files_save(outcome: Outcome, *, max_bytes: int) -> int:
    """Decode and store the outcome's kept files one at a time (so memory holds one file at
    most); return how many were stored. A file that does not decode fails the outcome as
    BadResult, one the storage refuses as StorageError; StoreDown when the storage is down."""
    task, saved = outcome.task, 0
    for entry in outcome.files:
        try:
            content = keepfiles.decode(entry, max_bytes=max_bytes)
        except KeepFileError as exc:
            outcome.fail("BadResult", str(exc))
            return saved
        except Exception as exc:  # noqa: BLE001
            outcome.fail("BadResult", f"kept file {str(entry.get('name'))[:100]!r} cannot be "
                                      f"decoded ({reason_of(exc)})")
            return saved
        try:
            kept_file_save(campaign=task.campaign.name, record_id=task.record_id,
                           name=entry["name"], content=content)
        except DB_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001
            if is_outage(exc):
                raise StoreDown(f"storage: {reason_of(exc)}") from exc
            outcome.fail("StorageError", f"kept file {entry['name'][:100]!r} could not be "
                                         f"stored: {reason_of(exc)}")
            return saved
        saved += 1
        del content
    return saved


def records_existing(dataset, ids: list[str]) -> set[str]:
    """The ids that still name a record of the dataset; StoreDown when the store is down."""
    try:
        return store_for(dataset).existing(ids=ids)
    except DB_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001
        raise StoreDown(f"dataset {dataset.name}: {reason_of(exc)}") from exc


class StoreRefused(Exception):
    """The store refused a write of results (not an outage); the message says what."""


def results_write(dataset, updates: list[ResultUpdate]) -> None:
    """Write the updates; StoreDown, StoreRefused, or a database error (propagated)."""
    if not updates:
        return
    try:
        store_for(dataset).write_results(updates=updates)
    except DB_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001
        if is_outage(exc):
            raise StoreDown(f"dataset {dataset.name}: {reason_of(exc)}") from exc
        raise StoreRefused(reason_of(exc)) from exc
