"""Per-task scratch directories under HTPORTAL_SCRATCH_DIR or TMPDIR (HTPORTAL_KEEP_SCRATCH
keeps them)."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from .errors import ScratchUnwritable

log = logging.getLogger(__name__)

KEEP_SCRATCH_VARIABLE = "HTPORTAL_KEEP_SCRATCH"
SCRATCH_DIR_VARIABLE = "HTPORTAL_SCRATCH_DIR"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, *, limit: int = 60) -> str:
    """`text` as a file name part: letters, digits, '.', '_' and '-' only, never hidden."""
    return _UNSAFE.sub("_", str(text)).lstrip(".")[:limit] or "_"


def keep_scratch() -> bool:
    return os.environ.get(KEEP_SCRATCH_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def scratch_root() -> str:
    """HTPORTAL_SCRATCH_DIR, taken as it is; else tempfile's (TMPDIR when usable, else /tmp...)."""
    return os.environ.get(SCRATCH_DIR_VARIABLE, "").strip() or tempfile.gettempdir()


def make_scratch(prefix: str) -> Path:
    """A new directory under scratch_root(); ScratchUnwritable when it cannot be made."""
    root = scratch_root()
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    except OSError as exc:
        raise ScratchUnwritable(f"cannot make a scratch directory in {root}: "
                                f"{exc.strerror or exc}") from None


class Scratch:
    """A task's scratch directory, made on first use of `path`.

    A task that runs no program and keeps no file (noop) then costs no mkdir and rmdir, which
    is most of a no-op task's time on an ordinary disk.
    """

    def __init__(self, *, record_id: str, arg_set: str):
        self.record_id = record_id
        self.arg_set = arg_set
        self._path: Optional[Path] = None

    @property
    def made(self) -> bool:
        return self._path is not None

    @property
    def path(self) -> Path:
        if self._path is None:
            prefix = f"htportal-{safe_name(self.record_id)}-{safe_name(self.arg_set, limit=30)}-"
            self._path = make_scratch(prefix)
        return self._path

    def close(self) -> None:
        if self._path is None:
            return
        if keep_scratch():
            log.info("record %s, arg set %s: scratch directory kept: %s",
                     self.record_id, self.arg_set, self._path)
        else:
            shutil.rmtree(self._path, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(*, record_id: str, arg_set: str) -> Iterator[Scratch]:
    """A Scratch under scratch_root() named after the record and arg set, removed afterwards.

    With HTPORTAL_KEEP_SCRATCH set (to anything but 0/false/no) it stays, and the log says where.
    """
    scratch = Scratch(record_id=record_id, arg_set=arg_set)
    try:
        yield scratch
    finally:
        scratch.close()
