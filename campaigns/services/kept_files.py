"""Kept files (a task's output, a docked pose) in Django's default storage.

Stored as `<campaign>/<record part>/<name part>` (docs/stores.md, "Kept files"):
- the record part is a readable form of the record id plus 16 hex digits of the sha256 of the
  raw id (`a_b-3f2c9d1e0a4b5c6d`), so ids that read alike (`a/b`, `a_b`; `αβ`, `γδ`: SMILES
  ids make this routine) never share a folder, and the id is recoverable from the hash;
- the name part is the worker's file name when it is already a safe file name (the usual
  `{id}_gfn2.out`), else its readable form plus the hash of the raw name, before the suffix.

The path is fixed by the task, so a result delivered twice overwrites its file instead of
leaving a `name_1` copy: writing stays idempotent. Files stored under the old naming
(`<campaign>/<safe id>/<safe name>`, before this rule) are still found by kept_file_find, as a
fallback. FileSystemStorage by default (settings.MEDIA_ROOT); django-storages' S3 backend works
by settings alone (STORAGES["default"]).
"""
from __future__ import annotations

import hashlib
from typing import IO, Optional

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage

from workers.runtime.scratch import safe_name

NAME_LIMIT = 200  # the old naming's cut, kept for the fallback
READABLE_LIMIT = 60  # characters of the readable part of a record id or file name
HASH_DIGITS = 16  # 64 bits: a collision between two ids that read alike is not to be expected


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_DIGITS]


def kept_file_record_part(record_id: str) -> str:
    """The folder of one record's kept files: readable id, '-', hash of the raw id."""
    return f"{safe_name(record_id, limit=READABLE_LIMIT)}-{_digest(record_id)}"


def kept_file_name_part(name: str) -> str:
    """A worker's file name as stored: itself when safe, else readable-hash with its suffix."""
    if safe_name(name, limit=NAME_LIMIT) == name:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or safe_name(suffix, limit=20) != suffix:
        stem, suffix = name, ""
    readable = safe_name(stem, limit=READABLE_LIMIT)
    return f"{readable}-{_digest(name)}" + (f".{suffix}" if suffix else "")


def kept_file_path(*, campaign: str, record_id: str, name: str) -> str:
    """The storage name of a kept file: `<campaign>/<record part>/<name part>`."""
    return "/".join((safe_name(campaign, limit=NAME_LIMIT), kept_file_record_part(record_id),
                     kept_file_name_part(name)))


def kept_file_legacy_path(*, campaign: str, record_id: str, name: str) -> str:
    """Where the old naming stored the file (two ids reading alike shared it)."""
    return "/".join(safe_name(part, limit=NAME_LIMIT) for part in (campaign, record_id, name))


def kept_file_save(*, campaign: str, record_id: str, name: str, content: bytes,
                   storage: Storage | None = None) -> str:
    """Store one kept file, replacing an earlier copy; return its storage name."""
    storage = storage if storage is not None else default_storage
    path = kept_file_path(campaign=campaign, record_id=record_id, name=name)
    # Storage.save never overwrites (it picks name_1 instead): make room first.
    if storage.exists(path):
        storage.delete(path)
    return storage.save(path, ContentFile(content))


def kept_file_find(*, campaign: str, record_id: str, name: str,
                   storage: Storage | None = None) -> Optional[str]:
    """The storage name holding this kept file, the old naming as a fallback; None if neither.

    A file found only under the old naming may be another record's whose id reads alike
    (the collision the new naming ends): it is the best there is for files stored before.
    """
    storage = storage if storage is not None else default_storage
    for path in (kept_file_path(campaign=campaign, record_id=record_id, name=name),
                 kept_file_legacy_path(campaign=campaign, record_id=record_id, name=name)):
        if storage.exists(path):
            return path
    return None


def kept_file_open(*, campaign: str, record_id: str, name: str,
                   storage: Storage | None = None) -> IO[bytes]:
    """Open one kept file for reading (binary); FileNotFoundError names what was looked for."""
    storage = storage if storage is not None else default_storage
    path = kept_file_find(campaign=campaign, record_id=record_id, name=name, storage=storage)
    if path is None:
        raise FileNotFoundError(f"no kept file {name!r} of record {record_id!r} in campaign "
                                f"{campaign!r}")
    return storage.open(path, "rb")
