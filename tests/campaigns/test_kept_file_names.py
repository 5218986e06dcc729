"""Kept-file names: records whose ids read alike never share a file, and files stored under the
old naming are still found."""
from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from campaigns.services.kept_files import (
    kept_file_find,
    kept_file_legacy_path,
    kept_file_open,
    kept_file_path,
    kept_file_save,
)
from workers.runtime.keepfiles import kept_name

# SMILES-like ids: the old naming mapped a/b and a_b to one folder, αβ and γδ to another.
ALIKE = ["a/b", "a_b", "αβ", "γδ"]


@pytest.fixture
def storage(tmp_path) -> FileSystemStorage:
    return FileSystemStorage(location=tmp_path / "storage")


def test_it_names_a_record_folder_readable_plus_the_hash_of_the_raw_id():
    assert kept_file_path(campaign="c1", record_id="a/b", name="a_b_gfn2.out") == \
        "c1/a_b-c14cddc033f64b9d/a_b_gfn2.out"
    assert kept_file_path(campaign="c1", record_id="αβ", name="__gfn2.out") == \
        "c1/_-1bef6bca1c45e2e0/__gfn2.out"


def test_the_old_naming_put_these_ids_together():
    old = {kept_file_legacy_path(campaign="c1", record_id=i, name=kept_name("{id}.out", i))
           for i in ALIKE}
    assert old == {"c1/a_b/a_b.out", "c1/_/_.out"}


def test_kept_files_of_ids_that_read_alike_are_stored_apart_and_read_back(storage):
    paths = {}
    for record_id in ALIKE:
        # The worker fills {id} with the same safe form for a/b and a_b: the folder tells apart.
        name = kept_name("{id}_gfn2.out", record_id)
        paths[record_id] = kept_file_save(campaign="c1", record_id=record_id, name=name,
                                          content=f"output of {record_id}\n".encode(),
                                          storage=storage)

    assert len(set(paths.values())) == 4
    for record_id in ALIKE:
        name = kept_name("{id}_gfn2.out", record_id)
        with kept_file_open(campaign="c1", record_id=record_id, name=name,
                            storage=storage) as stored:
            assert stored.read().decode() == f"output of {record_id}\n"


def test_a_second_delivery_overwrites_its_own_file_only(storage):
    for record_id in ("a/b", "a_b"):
        kept_file_save(campaign="c1", record_id=record_id, name="a_b.out",
                       content=record_id.encode(), storage=storage)
    kept_file_save(campaign="c1", record_id="a/b", name="a_b.out", content=b"again",
                   storage=storage)

    read = {i: kept_file_open(campaign="c1", record_id=i, name="a_b.out",
                              storage=storage).read() for i in ("a/b", "a_b")}
    assert read == {"a/b": b"again", "a_b": b"a_b"}
    assert sorted(storage.listdir("c1")[0]) == ["a_b-648fa9b31bc7ff7e", "a_b-c14cddc033f64b9d"]


def test_file_names_that_read_alike_in_one_record_are_stored_apart(storage):
    for name in ("x y.out", "x_y.out", "x/y.out"):
        kept_file_save(campaign="c1", record_id="m1", name=name, content=name.encode(),
                       storage=storage)

    for name in ("x y.out", "x_y.out", "x/y.out"):
        assert kept_file_open(campaign="c1", record_id="m1", name=name,
                              storage=storage).read() == name.encode()
    # A safe name is kept as it is; the others keep their suffix after the hash.
    assert kept_file_path(campaign="c1", record_id="m1", name="x_y.out").endswith("/x_y.out")
    assert kept_file_path(campaign="c1", record_id="m1", name="x y.out").endswith(".out")


def test_a_file_stored_under_the_old_naming_is_still_found(storage):
    storage.save("c1/mol-1/mol-1_gfn2.out", ContentFile(b"from before"))

    assert kept_file_find(campaign="c1", record_id="mol-1", name="mol-1_gfn2.out",
                          storage=storage) == "c1/mol-1/mol-1_gfn2.out"
    with kept_file_open(campaign="c1", record_id="mol-1", name="mol-1_gfn2.out",
                        storage=storage) as stored:
        assert stored.read() == b"from before"


def test_the_new_naming_wins_over_the_old_when_both_exist(storage):
    storage.save("c1/mol-1/mol-1.out", ContentFile(b"old"))
    kept_file_save(campaign="c1", record_id="mol-1", name="mol-1.out", content=b"new",
                   storage=storage)

    assert kept_file_open(campaign="c1", record_id="mol-1", name="mol-1.out",
                          storage=storage).read() == b"new"


def test_a_missing_kept_file_says_what_was_looked_for(storage):
    with pytest.raises(FileNotFoundError) as caught:
        kept_file_open(campaign="c1", record_id="a/b", name="x.out", storage=storage)

    assert str(caught.value) == "no kept file 'x.out' of record 'a/b' in campaign 'c1'"
