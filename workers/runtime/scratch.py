"""Per-task scratch directories under TMPDIR (HTPORTAL_KEEP_SCRATCH keeps them)."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

KEEP_SCRATCH_VARIABLE = "HTPORTAL_KEEP_SCRATCH"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, *, limit: int = 60) -> str:
    """`text` as a file name part: letters, digits, '.', '_' and '-' only, never hidden."""
    return _UNSAFE.sub("_", str(text)).lstrip(".")[:limit] or "_"


def keep_scratch() -> bool:
    return os.environ.get(KEEP_SCRATCH_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def scratch_dir(*, record_id: str, arg_set: str) -> Iterator[Path]:
    """A new directory under TMPDIR named after the record and arg set, removed afterwards.

    With HTPORTAL_KEEP_SCRATCH set (to anything but 0/false/no) it stays, and the log says where.
    """
    prefix = f"htportal-{safe_name(record_id)}-{safe_name(arg_set, limit=30)}-"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))
    try:
        yield path
    finally:
        if keep_scratch():
            log.info("record %s, arg set %s: scratch directory kept: %s", record_id, arg_set, path)
        else:
            shutil.rmtree(path, ignore_errors=True)
