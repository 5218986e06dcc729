"""Kept files: a stream or scratch file sent back with the result, gzip + base64, sha256, capped.

An entry (one per kept file, in the result document's "files" list):
    {"name": "mol-0001_gfn2.out", "arg_set": "gfn2", "source": "stdout", "encoding": "gzip",
     "size": 5120, "compressed_size": 1400, "sha256": "<of the uncompressed bytes>",
     "data": "<base64 of the gzip bytes>"}
or, when the file is missing or its compressed size is over the cap, "error" instead of "data".
Standard library only: the portal's collector decodes entries with `decode` too.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import os
import string
import tempfile
import zlib
from pathlib import Path
from typing import Dict, Mapping

from . import errors
from .scratch import safe_name

DEFAULT_CAP = 16 * 1024 * 1024  # bytes of gzip data per kept file
CAP_VARIABLE = "HTPORTAL_KEEP_FILE_CAP"
CHUNK = 1024 * 1024
STREAMS = ("stdout", "stderr")


def file_cap(spec: Mapping) -> int:
    """The per-file cap on compressed size: HTPORTAL_KEEP_FILE_CAP, else the spec's, else 16 MiB."""
    raw = os.environ.get(CAP_VARIABLE, "")
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise errors.InputError(f"{CAP_VARIABLE}={raw!r} is not a whole number") from None
    cap = spec.get("keep_file_cap")
    if cap is None:
        return DEFAULT_CAP
    if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
        raise errors.InputError(f"keep_file_cap must be a positive whole number (got {cap!r})")
    return cap


def check_source(source: object, *, where: str) -> str:
    """`source` if it is 'stdout', 'stderr' or a relative path inside the scratch directory."""
    if not isinstance(source, str) or not source.strip():
        raise errors.InputError(f"{where}: a stream or file name must be a non-empty string "
                                f"(got {source!r})")
    parts = Path(source).parts
    if source.startswith(("/", "\\")) or ".." in parts or "\\" in source:
        raise errors.InputError(f"{where}: file {source!r} must be a path inside the scratch "
                                "directory (no leading '/', no '..')")
    return source


def check_pattern(pattern: object, *, where: str) -> str:
    """`pattern` if it makes a plain file name: text plus at most the placeholder {id}."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise errors.InputError(f"{where}: a kept file name must be a non-empty string "
                                f"(got {pattern!r})")
    try:
        fields = [field for _, field, spec, conv in string.Formatter().parse(pattern)
                  if field is not None and (field != "id" or spec or conv)]
    except ValueError as exc:
        raise errors.InputError(f"{where}: kept file name {pattern!r}: {exc}") from None
    if fields or "{}" in pattern:
        raise errors.InputError(f"{where}: kept file name {pattern!r} may use only the "
                                "placeholder {id}")
    if "/" in pattern or "\\" in pattern or ".." in pattern:
        raise errors.InputError(f"{where}: kept file name {pattern!r} must be a plain file name "
                                "(no '/', '\\' or '..')")
    return pattern


def kept_name(pattern: str, record_id: str) -> str:
    """The pattern with {id} filled in (record ids are made safe for a file name)."""
    return pattern.format(id=safe_name(record_id, limit=200))


def keep_file(*, path: Path, name: str, arg_set: str, source: str, cap: int) -> Dict:
    """The entry of one kept file; a missing or too large file gives an entry with "error".

    The file is compressed in chunks to a temporary file, so a large output never sits in
    memory; only a compressed size under the cap is read back and base64-encoded.
    """
    entry: Dict = {"name": name, "arg_set": arg_set, "source": source}
    if not path.is_file():
        entry["error"] = f"not found: {source}"
        return entry
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryFile() as packed:
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=packed, mode="wb", mtime=0,
                                                     filename="") as gz:
            for chunk in iter(lambda: raw.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                gz.write(chunk)
        compressed_size = packed.tell()
        entry.update(encoding="gzip", size=size, compressed_size=compressed_size,
                     sha256=digest.hexdigest())
        if compressed_size > cap:
            entry["error"] = (f"{source}: compressed size {compressed_size} bytes is over the "
                              f"cap of {cap} bytes")
            return entry
        packed.seek(0)
        entry["data"] = base64.b64encode(packed.read()).decode("ascii")
    return entry


# What the collector decodes a kept file to, at most: the declared size is the worker's word,
# so it is trusted only up to this.
DEFAULT_DECODE_CAP = 128 * 1024 * 1024


def decode(entry: Mapping, *, max_bytes: int = DEFAULT_DECODE_CAP) -> bytes:
    """The original bytes of a kept file entry, checked against its size and sha256.

    Decompressed incrementally: decoding stops as soon as the output would pass the entry's
    declared size or `max_bytes`, whichever is smaller, so a gzip bomb (gigabytes of zeros in a
    few megabytes, declared small) costs no more memory than the cap.

    Raises errors.KeepFileError for an entry that carries an error, or whose data is not
    base64 or gzip, or does not match its size or checksum, or is over the cap.
    """
    name = entry.get("name", "?")
    if entry.get("error"):
        raise errors.KeepFileError(f"kept file {name!r} was not kept: {entry['error']}")
    if entry.get("encoding") != "gzip" or not isinstance(entry.get("data"), str):
        raise errors.KeepFileError(f"kept file {name!r}: no gzip data in the entry")
    size = entry.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise errors.KeepFileError(f"kept file {name!r}: size {str(size)[:40]!r} is not a "
                                   "whole number of bytes")
    if size > max_bytes:
        raise errors.KeepFileError(f"kept file {name!r}: {size:,} bytes, over the cap of "
                                   f"{max_bytes:,} bytes")
    try:
        packed = base64.b64decode(entry["data"], validate=True)
    except (binascii.Error, ValueError):
        raise errors.KeepFileError(f"kept file {name!r}: data is not valid base64") from None
    content = _gunzip(packed, limit=size, name=name)
    if len(content) != size:
        raise errors.KeepFileError(f"kept file {name!r}: {len(content)} bytes, the entry says "
                                   f"{size}")
    if hashlib.sha256(content).hexdigest() != entry.get("sha256"):
        raise errors.KeepFileError(f"kept file {name!r}: sha256 does not match: the data is "
                                   "corrupted")
    return content


def _gunzip(packed: bytes, *, limit: int, name: str) -> bytes:
    """The gzip members in `packed`, decompressed; KeepFileError once past `limit` bytes."""
    out = bytearray()
    data = packed
    try:
        while data:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while True:
                # Never more than one byte past the limit at a time: max_length bounds the
                # output of each call whatever the ratio of the data.
                chunk = inflater.decompress(data, limit + 1 - len(out))
                out += chunk
                if len(out) > limit:
                    raise errors.KeepFileError(
                        f"kept file {name!r}: at least {len(out)} bytes, the entry says "
                        f"{limit} (decoding stopped there)")
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
                if not data and not chunk:
                    raise errors.KeepFileError(f"kept file {name!r}: data is not valid gzip "
                                               "(truncated)")
            data = inflater.unused_data  # gzip allows several members one after another
    except zlib.error:
        raise errors.KeepFileError(f"kept file {name!r}: data is not valid gzip") from None
    return bytes(out)
