"""Request bodies: job definition files as YAML text, molecule files spooled to disk, JSON.

Every body is bounded (docs/security.md): DRF's parsers do not apply Django's
DATA_UPLOAD_MAX_MEMORY_SIZE, so each parser here refuses a Content-Length over its limit before
reading anything and stops reading past it, with 413 {"error": "request body is N bytes, over the
limit of M (HTPORTAL_MAX_BODY_BYTES)"}. A definition or JSON body has settings.MAX_BODY_BYTES; a
molecule upload has its own, larger settings.MAX_UPLOAD_BYTES.

A molecule upload is never held in memory: its body (or its multipart file) is copied a chunk at
a time into a temporary file named like the upload, since records_import picks the reader by the
file's extension and names the file in its messages.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Tuple

import yaml
from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser, FormParser, JSONParser, MultiPartParser

from campaigns.bounds import depth_message, max_json_depth, more_nodes_than, too_deep
from campaigns.errors import ApplicationError
from campaigns.molecules import READERS

CHUNK_BYTES = 1024 * 1024
BODY_SOURCE = "request body"
BODY_LIMIT = "MAX_BODY_BYTES"  # setting names; the variable is HTPORTAL_<name>
UPLOAD_LIMIT = "MAX_UPLOAD_BYTES"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


def body_limit(setting: str) -> int:
    return int(getattr(settings, setting))


def check_length(parser_context, setting: str) -> int:
    """The limit `setting` names; BodyTooLarge if the request's Content-Length is over it."""
    limit = body_limit(setting)
    request = (parser_context or {}).get("request")
    raw = request.META.get("CONTENT_LENGTH", "") if request is not None else ""
    if str(raw).isdigit() and int(raw) > limit:
        raise BodyTooLarge(f"request body is {int(raw):,} bytes, over the limit of {limit:,} "
                           f"(HTPORTAL_{setting})")
    return limit


def bounded_chunks(stream, limit: int, setting: str) -> Iterator[bytes]:
    """The stream's chunks; BodyTooLarge as soon as more than `limit` bytes came (a body that
    has no Content-Length or lies about it)."""
    total = 0
    while chunk := stream.read(CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit:,} bytes "
                               f"(HTPORTAL_{setting})")
        yield chunk


def read_body(stream, parser_context, setting: str = BODY_LIMIT) -> bytes:
    """The whole body, within the limit `setting` names."""
    limit = check_length(parser_context, setting)
    return b"".join(bounded_chunks(stream, limit, setting)) if stream is not None else b""


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser within MAX_BODY_BYTES and MAX_JSON_DEPTH; NaN and Infinity refused."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = read_body(stream, parser_context)
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except RecursionError:
            raise ParseError(f"JSON parse error - {depth_message(limit=max_json_depth())}") from None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
            raise ParseError(f"JSON parse error - {exc}") from None
        if too_deep(data, limit=max_json_depth()):
            raise ParseError(f"JSON parse error - {depth_message(limit=max_json_depth())}")
        return data


class BoundedFormParser(FormParser):
    """DRF's form parser within MAX_BODY_BYTES."""

    def parse(self, stream, media_type=None, parser_context=None):
        check_length(parser_context, BODY_LIMIT)
        return super().parse(stream, media_type, parser_context)


class BoundedMultiPartParser(MultiPartParser):
    """DRF's multipart parser, refusing a Content-Length over `limit_setting` (Django streams
    the files to temporary files and reads no more than Content-Length)."""

    limit_setting = BODY_LIMIT

    def parse(self, stream, media_type=None, parser_context=None):
        check_length(parser_context, self.limit_setting)
        return super().parse(stream, media_type, parser_context)


class UploadMultiPartParser(BoundedMultiPartParser):
    """A molecule file as the multipart field 'file': the upload limit, not the body limit."""

    limit_setting = UPLOAD_LIMIT


class YamlParser(BaseParser):
    """A job definition file in the body: its text, parsed later by the definition service."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None) -> str:
        return _utf8(read_body(stream, parser_context), BODY_SOURCE)


class TextYamlParser(YamlParser):
    media_type = "text/yaml"


class XYamlParser(YamlParser):
    media_type = "application/x-yaml"


@dataclass
class Spooled:
    """A molecule file on disk, in a directory of its own."""

    path: Path

    def cleanup(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)

    def relative(self, message: str) -> str:
        """The importer's message with the temporary directory taken out: 'upload.jsonl:3: ...'."""
        return message.replace(f"{self.path.parent}/", "")


def spool(chunks: Iterable[bytes], name: str) -> Spooled:
    """Write `chunks` to a new temporary file called `name` (made safe)."""
    directory = Path(tempfile.mkdtemp(prefix="htportal-upload-"))
    spooled = Spooled(directory / (_UNSAFE_NAME.sub("_", Path(name).name).lstrip(".") or "upload"))
    try:
        with open(spooled.path, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
    except BaseException:
        spooled.cleanup()
        raise
    return spooled


class MoleculeFileParser(BaseParser):
    """A molecule file as the body; `extension` picks the reader."""

    extension = ".jsonl"

    def parse(self, stream, media_type=None, parser_context=None) -> Spooled:
        limit = check_length(parser_context, UPLOAD_LIMIT)
        return spool(bounded_chunks(stream, limit, UPLOAD_LIMIT) if stream is not None else [],
                     f"upload{self.extension}")


class JsonLinesParser(MoleculeFileParser):
    media_type = "application/x-ndjson"
    extension = ".jsonl"


class JsonlParser(JsonLinesParser):
    media_type = "application/jsonl"


class ExtxyzParser(MoleculeFileParser):
    media_type = "chemical/x-extxyz"
    extension = ".extxyz"


class XyzParser(MoleculeFileParser):
    media_type = "chemical/x-xyz"
    extension = ".xyz"


class SdfParser(MoleculeFileParser):
    media_type = "chemical/x-mdl-sdfile"
    extension = ".sdf"


MOLECULE_PARSERS = [JsonLinesParser, JsonlParser, ExtxyzParser, XyzParser, SdfParser]
YAML_PARSERS = [YamlParser, TextYamlParser, XYamlParser]


def molecule_upload(request) -> Spooled:
    """The request's molecule file on disk: the body (a MOLECULE_PARSERS type) or the multipart
    field 'file', whose name's extension picks the reader."""
    data = request.data
    if isinstance(data, Spooled):
        return data
    upload = request.FILES.get("file")
    if upload is None:
        raise ApplicationError(
            "no molecules: send a file as the body (Content-Type application/x-ndjson, "
            "chemical/x-extxyz, chemical/x-xyz or chemical/x-mdl-sdfile) or as the multipart "
            f"field 'file' named *{' *'.join(READERS)}")
    return spool(upload.chunks(), upload.name or "upload")


def definition_text(request) -> Tuple[str, str]:
    """(text, source) of the job definition a request carries: YAML text as the body, a
    multipart field 'file', or the same document as JSON (dumped to YAML, so it is checked by
    exactly the same code as a file)."""
    data = request.data
    if isinstance(data, str):
        return data, BODY_SOURCE
    if request.content_type.startswith("multipart/"):
        upload = request.FILES.get("file")
        if upload is None:
            raise ApplicationError("no job definition: send it as the multipart field 'file'")
        return _utf8(upload.read(), upload.name), upload.name
    # Dumping is slow per node: a 10 MB JSON array of numbers would take a worker for seconds
    # before the loader's node limit refused it, so the same limit comes first here.
    limit = int(settings.YAML_MAX_NODES)
    if more_nodes_than(data, limit=limit):
        raise ApplicationError(f"{BODY_SOURCE}: the document has more than {limit:,} values, "
                               "over the limit (HTPORTAL_YAML_MAX_NODES)")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), BODY_SOURCE


def _utf8(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApplicationError(f"{source}: not UTF-8 text ({exc.reason})") from None
