"""Kept files: gzip + base64 with the sha256 of the original bytes, a cap, checked decoding."""
from __future__ import annotations

import base64
import gzip
import hashlib
import os

import pytest

from workers.runtime import errors, keepfiles


def _keep(tmp_path, content: bytes, *, cap=keepfiles.DEFAULT_CAP, source="orca.gbw"):
    (tmp_path / source).write_bytes(content)
    return keepfiles.keep_file(path=tmp_path / source, name="mol-1_x.gbw", arg_set="x",
                               source=source, cap=cap)


def test_it_round_trips_a_file_with_its_size_and_checksum(tmp_path):
    content = b"FINAL SINGLE POINT ENERGY  -76.348972603816\n" * 1000
    entry = _keep(tmp_path, content)

    assert entry["name"] == "mol-1_x.gbw"
    assert (entry["arg_set"], entry["source"], entry["encoding"]) == ("x", "orca.gbw", "gzip")
    assert entry["size"] == len(content)
    assert entry["sha256"] == hashlib.sha256(content).hexdigest()
    assert entry["compressed_size"] == len(base64.b64decode(entry["data"])) < len(content)
    assert keepfiles.decode(entry) == content


def test_a_file_over_the_cap_is_an_error_entry_without_data(tmp_path):
    entry = _keep(tmp_path, os.urandom(200_000), cap=100_000)

    assert "data" not in entry
    assert entry["size"] == 200_000
    assert entry["compressed_size"] > 100_000
    assert entry["error"] == (f"orca.gbw: compressed size {entry['compressed_size']} bytes is "
                              "over the cap of 100000 bytes")
    with pytest.raises(errors.KeepFileError, match="was not kept: orca.gbw: compressed size"):
        keepfiles.decode(entry)


def test_the_cap_is_on_the_compressed_size(tmp_path):
    entry = _keep(tmp_path, b"\0" * 1_000_000, cap=100_000)
    assert keepfiles.decode(entry) == b"\0" * 1_000_000


def test_a_missing_file_is_an_error_entry(tmp_path):
    entry = keepfiles.keep_file(path=tmp_path / "orca.gbw", name="m_x.gbw", arg_set="x",
                                source="orca.gbw", cap=100)
    assert entry == {"name": "m_x.gbw", "arg_set": "x", "source": "orca.gbw",
                     "error": "not found: orca.gbw"}


def test_a_corrupted_entry_fails_to_decode(tmp_path):
    content = b"some output\n" * 100
    entry = _keep(tmp_path, content)
    other = gzip.compress(b"some outpuT\n" * 100)
    with pytest.raises(errors.KeepFileError, match="sha256 does not match: the data is corrupted"):
        keepfiles.decode(dict(entry, data=base64.b64encode(other).decode()))
    with pytest.raises(errors.KeepFileError, match="data is not valid base64"):
        keepfiles.decode(dict(entry, data=entry["data"][:-3] + "!!!"))
    with pytest.raises(errors.KeepFileError, match="data is not valid gzip"):
        keepfiles.decode(dict(entry, data=base64.b64encode(b"not gzip at all").decode()))
    with pytest.raises(errors.KeepFileError, match="1200 bytes, the entry says 1199"):
        keepfiles.decode(dict(entry, size=1199))


@pytest.mark.parametrize("pattern", ["{id}_gfn2.out", "{id}.gbw", "plain.out", "{id}-{id}.x"])
def test_good_patterns_pass(pattern):
    assert keepfiles.check_pattern(pattern, where="arg set 'a'") == pattern


@pytest.mark.parametrize("pattern, problem", [
    ("{name}_x.out", "may use only the placeholder {id}"),
    ("{}_x.out", "may use only the placeholder {id}"),
    ("{0}.out", "may use only the placeholder {id}"),
    ("{id!r}.out", "may use only the placeholder {id}"),
    ("{id:>5}.out", "may use only the placeholder {id}"),
    ("{id.x}.out", "may use only the placeholder {id}"),
    ("{id", "expected '}' before end of string"),
    ("out/{id}.out", "must be a plain file name"),
    ("..{id}.out", "must be a plain file name"),
    ("", "must be a non-empty string"),
])
def test_bad_patterns_are_rejected(pattern, problem):
    with pytest.raises(errors.InputError) as caught:
        keepfiles.check_pattern(pattern, where="arg set 'a'")
    assert str(caught.value).startswith("arg set 'a': ")
    assert problem in str(caught.value)


@pytest.mark.parametrize("source", ["/etc/passwd", "../x", "a/../../x", ""])
def test_sources_outside_the_scratch_directory_are_rejected(source):
    with pytest.raises(errors.InputError, match="^arg set 'a': "):
        keepfiles.check_source(source, where="arg set 'a'")


def test_the_record_id_is_filled_in_and_made_safe():
    assert keepfiles.kept_name("{id}_gfn2.out", "mol-0001") == "mol-0001_gfn2.out"
    assert keepfiles.kept_name("{id}.out", "../a b") == "_a_b.out"


def test_the_cap_comes_from_the_environment_then_the_spec(monkeypatch):
    monkeypatch.delenv("HTPORTAL_KEEP_FILE_CAP", raising=False)
    assert keepfiles.file_cap({}) == 16 * 1024 * 1024
    assert keepfiles.file_cap({"keep_file_cap": 1000}) == 1000
    monkeypatch.setenv("HTPORTAL_KEEP_FILE_CAP", "500")
    assert keepfiles.file_cap({"keep_file_cap": 1000}) == 500
    monkeypatch.setenv("HTPORTAL_KEEP_FILE_CAP", "lots")
    with pytest.raises(errors.InputError, match="HTPORTAL_KEEP_FILE_CAP='lots' is not a whole"):
        keepfiles.file_cap({})
