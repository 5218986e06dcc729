"""Request bodies: job definition files as YAML text, molecule files spooled to disk.

A molecule upload is never held in memory: its body (or its multipart file) is copied a chunk at
a time into a temporary file named like the upload, since records_import picks the reader by the
file's extension and names the file in its messages.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Tuple

import yaml
from rest_framework.parsers import BaseParser

from campaigns.errors import ApplicationError
from campaigns.molecules import READERS

CHUNK_BYTES = 1024 * 1024
BODY_SOURCE = "request body"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class YamlParser(BaseParser):
    """A job definition file in the body: its text, parsed later by the definition service."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None) -> str:
        return _utf8(stream.read() if stream is not None else b"", BODY_SOURCE)


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


def _stream_chunks(stream) -> Iterable[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


class MoleculeFileParser(BaseParser):
    """A molecule file as the body; `extension` picks the reader."""

    extension = ".jsonl"

    def parse(self, stream, media_type=None, parser_context=None) -> Spooled:
        return spool(_stream_chunks(stream) if stream is not None else [],
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
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), BODY_SOURCE


def _utf8(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApplicationError(f"{source}: not UTF-8 text ({exc.reason})") from None
