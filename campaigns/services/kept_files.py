"""Kept files (a task's output, a docked pose) in Django's default storage.

Stored as `<campaign>/<record id>/<name>`, each part reduced to a safe file name. The path is
fixed by the task, so a result delivered twice overwrites its file instead of leaving a
`name_1` copy: writing stays idempotent. FileSystemStorage by default (settings.MEDIA_ROOT);
django-storages' S3 backend works by settings alone (STORAGES["default"]).
"""
from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage

from workers.runtime.scratch import safe_name

NAME_LIMIT = 200


def kept_file_path(*, campaign: str, record_id: str, name: str) -> str:
    """The storage name of a kept file: `<campaign>/<record id>/<name>`, safe parts only."""
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
