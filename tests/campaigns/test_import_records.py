"""import_records: every format, twice adds nothing, broken molecules with file and line."""
from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path

import ase.io
import pytest
from django.core.management import CommandError, call_command

from campaigns.models import Dataset, Record
from campaigns.molecules import content_id, parse_comment, read_xyz
from campaigns.progress import Progress
from campaigns.errors import RecordImportError
from campaigns.services import records
from campaigns.services.records import records_import

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "molecules"


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_records", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def inputs(name: str = "mols") -> dict[str, dict]:
    return dict(Record.objects.filter(dataset__name=name).values_list("record_id", "input"))


@pytest.fixture
def mols(db):
    return Dataset.objects.create(name="mols")


def test_it_imports_xyz(mols):
    out, _ = run("mols", str(FIXTURES / "water.xyz"))
    assert out == "mols: 1 added, 0 already present, 1 records\n"
    [(record_id, water)] = inputs().items()
    assert water == {
        "elements": ["O", "H", "H"],
        "coordinates": [[1.01943, -0.08372, 0.0722], [1.98731, -0.03784, 0.06509],
                        [0.74058, 0.83334, -0.06992]],
        "charge": 0, "multiplicity": 1,
        "comment": "water (3D from SMILES O by Open Babel 3.1.1 --gen3d)",
    }
    assert record_id == content_id(water) and len(record_id) == 16


def test_it_imports_multi_frame_extxyz_with_ids_charges_and_extras(mols):
    run("mols", str(FIXTURES / "frames.extxyz"))
    records = inputs()
    assert set(records) == {"water-1", "methyl", content_id(records.get(
        next(k for k in records if k not in ("water-1", "methyl"))))}
    water = records["water-1"]
    assert (water["charge"], water["multiplicity"], water["energy"], water["source"]) == (
        0, 1, -76.4, "g2 set")
    assert "pbc" not in water and "Properties" not in water
    assert records["methyl"]["multiplicity"] == 2 and records["methyl"]["converged"] is True
    cation = next(v for k, v in records.items() if k not in ("water-1", "methyl"))
    assert (cation["charge"], cation["multiplicity"], cation["tags"]) == (1, 2, [1, 2, 3])


def test_extxyz_reads_what_ase_reads():
    """The lean reader and ase agree on symbols, positions and info, frame by frame."""
    for name in ("frames.extxyz", "forces.extxyz", "water.xyz"):
        with open(FIXTURES / name) as handle:
            ours = list(read_xyz(handle))
        theirs = ase.io.read(FIXTURES / name, index=":")
        assert len(ours) == len(theirs)
        for mine, atoms in zip(ours, theirs):
            assert mine.input["elements"] == atoms.get_chemical_symbols()
            assert mine.input["coordinates"] == atoms.positions.tolist()
            info = {**atoms.info, **(atoms.calc.results if atoms.calc else {})}
            for key in ("charge", "multiplicity", "energy", "converged"):
                if key in info:
                    assert mine.input[key] == info[key]


@pytest.mark.parametrize("line", [
    'Properties=species:S:1:pos:R:3 id=a-1 charge=-1 multiplicity=2 energy=-1.5e2 pbc="F F F"',
    'name=x ok=T bad=false list="1 2 3" floats="1.0 2 3" words="a b" z=1E-3',
    'key={1 2 3} other="quoted, with comma" esc=a\\ b',
])
def test_comment_lines_read_as_ase_reads_them(line):
    expected = {k: (v.tolist() if hasattr(v, "tolist") else v)
                for k, v in ase.io.extxyz.key_val_str_to_dict(line).items()}
    assert parse_comment(line) == expected


def test_forces_and_other_columns_are_kept(mols):
    run("mols", str(FIXTURES / "forces.extxyz"))
    h2 = inputs()["h2-forces"]
    assert h2["forces"] == [[0.0, 0.0, -0.05], [0.0, 0.0, 0.05]] and h2["energy"] == -1.17


def test_it_imports_sdf_with_titles_charges_and_data_items(mols):
    run("mols", str(FIXTURES / "molecules.sdf"))
    records = inputs()
    assert set(records) == {"methane", "ammonium"}
    assert records["methane"]["elements"] == ["C", "H", "H", "H", "H"]
    assert records["methane"]["coordinates"][1] == [0.6291, 0.6291, 0.6291]
    assert (records["methane"]["source"], records["methane"]["energy"]) == ("G2", -40.5)
    assert (records["ammonium"]["charge"], records["ammonium"]["multiplicity"]) == (1, 1)


def test_it_imports_mol(mols):
    run("mols", str(FIXTURES / "methanol.mol"))
    assert inputs()["methanol"]["elements"] == ["C", "O", "H", "H", "H", "H"]


def test_it_imports_jsonl_keeping_extra_fields(mols):
    run("mols", str(FIXTURES / "molecules.jsonl"))
    records = inputs()
    assert records["h2"] == {"elements": ["H", "H"], "coordinates": [[0, 0, 0], [0, 0, 0.74]],
                             "charge": 0, "multiplicity": 1, "source": "test"}
    assert records["7"]["multiplicity"] == 2
    helium = next(v for k, v in records.items() if k not in ("h2", "7"))
    assert helium["tags"] == ["noble", "atom"]
    assert len(records) == 3


@pytest.mark.django_db(databases=["default", "postgres"])
@pytest.mark.parametrize("alias", ["default", "postgres"])
def test_importing_twice_adds_nothing(alias):
    dataset = Dataset.objects.using(alias).create(name="twice")
    files = [FIXTURES / "frames.extxyz", FIXTURES / "molecules.jsonl"]
    first = records_import(dataset=dataset, paths=files, using=alias)
    second = records_import(dataset=dataset, paths=files, using=alias)
    assert (first.added, first.already_present) == (6, 0)
    assert (second.added, second.already_present) == (0, 6)
    assert Record.objects.using(alias).filter(dataset=dataset).count() == 6
    assert Dataset.objects.using(alias).get(pk=dataset.pk).record_count == 6
    stored = Record.objects.using(alias).get(dataset=dataset, record_id="water-1")
    assert stored.input["energy"] == -76.4 and stored.results == {}


def test_the_command_reports_twice_as_already_present(mols):
    run("mols", str(FIXTURES / "frames.extxyz"))
    out, _ = run("mols", str(FIXTURES / "frames.extxyz"))
    assert out == "mols: 0 added, 3 already present, 3 records\n"


BROKEN = [
    ("broken.extxyz", "broken.extxyz:6: frame 2: expected 5 atom lines, found 3", {"ok-1", "ok-2"}),
    ("broken_atom.xyz", "broken_atom.xyz:8: frame 2: atom line 'H 0.000000 zero 0.740000' is "
                        "not 'element x y z'", {"ok-3"}),
    ("broken.jsonl", "broken.jsonl:2: coordinates has 2 rows but elements has 3",
     {"ok-h2", "ok-he"}),
    ("broken.sdf", "broken.sdf:17: molecule 2: atom line '    0.0000    zero    0.0000 H   0  0  "
                   "0  0  0  0  0  0  0  ' is not 'x y z element ...'", {"ok-methane", None}),
]


@pytest.mark.parametrize(("name", "message", "kept"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_molecule_is_reported_with_file_and_line_and_skipped(mols, name, message, kept):
    out, err = run("mols", str(FIXTURES / name))
    assert err == f"skipped {FIXTURES / name.split(':')[0]}:{message.split(':', 1)[1]}\n"
    assert out.endswith(f"; 1 broken molecules skipped\n")
    ids = set(inputs())
    assert {i for i in kept if i} <= ids and len(ids) == len(kept)


@pytest.mark.parametrize(("name", "message", "kept"), BROKEN, ids=[b[0] for b in BROKEN])
def test_abort_stops_and_writes_nothing_of_any_file(mols, name, message, kept):
    run("mols", str(FIXTURES / "water.xyz"))
    with pytest.raises(CommandError) as caught:
        run("mols", str(FIXTURES / "molecules.jsonl"), str(FIXTURES / name), "--on-error", "abort")
    assert str(caught.value) == f"{FIXTURES}/{message} (--on-error abort: nothing was written)"
    # water from before stays; nothing of the good file before the broken one, nor of it
    assert len(inputs()) == 1
    assert Dataset.objects.get(name="mols").record_count == 1


def write_jsonl(path: Path, count: int, tail: str = "") -> Path:
    water = {"elements": ["O", "H", "H"], "coordinates": [[0, 0, 0.117], [0, 0.757, -0.467],
                                                          [0, -0.757, -0.467]]}
    path.write_text("".join(json.dumps({"id": f"w{n:05d}", **water}) + "\n"
                            for n in range(count)) + tail)
    return path


BAD = '{"id": "bad", "elements": ["O"]}\n'


def test_the_command_with_abort_and_a_bad_last_line_writes_nothing(mols, tmp_path):
    """Ten batches are inserted before the bad line; all of them are rolled back."""
    path = write_jsonl(tmp_path / "big.jsonl", 1000, tail=BAD)
    with pytest.raises(CommandError) as caught:
        run("mols", str(path), "--on-error", "abort", "--batch-size", "100")
    assert str(caught.value) == (f"{path}:1001: missing coordinates "
                                 "(--on-error abort: nothing was written)")
    assert Record.objects.count() == 0 and Dataset.objects.get(name="mols").record_count == 0


@pytest.mark.django_db(databases=["default", "postgres"])
@pytest.mark.parametrize("alias", ["default", "postgres"])
def test_abort_raises_with_a_report_of_nothing_written(alias, tmp_path):
    dataset = Dataset.objects.using(alias).create(name="mols")
    path = write_jsonl(tmp_path / "big.jsonl", 1000, tail=BAD)
    with pytest.raises(RecordImportError) as caught:
        records_import(dataset=dataset, paths=[path], on_error="abort", batch_size=100,
                       using=alias)
    report = caught.value.report
    assert (report.read, report.added, report.record_count) == (0, 0, 0)
    assert Record.objects.using(alias).filter(dataset=dataset).count() == 0


@pytest.mark.django_db(databases=["default", "postgres"])
@pytest.mark.parametrize("alias", ["default", "postgres"])
def test_skip_reports_what_was_written_and_each_broken_line(alias, tmp_path):
    dataset = Dataset.objects.using(alias).create(name="mols")
    lines = write_jsonl(tmp_path / "x.jsonl", 10).read_text().splitlines(keepends=True)
    lines[2:2] = ["not json\n"]
    lines[6:6] = [BAD]
    lines.append(lines[0])  # w00000 twice: a duplicate, not an error
    lines.append('{"id": "bad2", "elements": ["O"], "coordinates": [[0, 0]]}\n')
    path = tmp_path / "x.jsonl"
    path.write_text("".join(lines))
    report = records_import(dataset=dataset, paths=[path], on_error="skip", batch_size=3,
                            using=alias)
    assert (report.read, report.added, report.already_present, report.skipped) == (11, 10, 1, 3)
    assert [(e.file, e.line) for e in report.errors] == [("x.jsonl", 3), ("x.jsonl", 7),
                                                           ("x.jsonl", 14)]
    assert report.errors[1].error == "missing coordinates"
    assert report.summary() == "10 written, 3 skipped, 1 already present"
    assert report.as_dict()["written"] == 10 and report.record_count == 10


def test_skip_keeps_the_first_errors_and_counts_all(mols, tmp_path, monkeypatch):
    monkeypatch.setattr(records, "MAX_ERRORS_KEPT", 2)
    path = tmp_path / "bad.jsonl"
    path.write_text("x\n" * 5)
    report = records_import(dataset=mols, paths=[path], on_error="skip")
    assert report.skipped == 5 and [e.line for e in report.errors] == [1, 2]


def test_a_failure_in_skip_mode_says_what_was_written_before_it(mols, tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", 300)
    with open(path, "ab") as handle:
        handle.write(b'{"id": "\xff"}\n')
    with pytest.raises(CommandError) as caught:
        run("mols", str(path), "--batch-size", "100")
    # The reader decodes ahead, so it fails before its last molecules: those it had read and
    # not yet inserted are "read but not written", never "already present".
    written = Record.objects.count()
    assert 0 < written < 300 and written % 100 == 0
    match = re.search(r"not UTF-8 text \(invalid start byte\) \(([\d,]+) written, 0 skipped, "
                      r"0 already present, ([\d,]+) read but not written before it\)$",
                      str(caught.value))
    assert match, str(caught.value)
    assert int(match[1]) == written and 0 < int(match[2]) <= 300 - written


def test_abort_with_only_a_broken_file_leaves_the_dataset_unchanged(mols):
    with pytest.raises(CommandError):
        run("mols", str(FIXTURES / "broken.extxyz"), "--on-error", "abort")
    assert Record.objects.count() == 0 and Dataset.objects.get(name="mols").record_count == 0


def test_an_unknown_extension_lists_the_supported_ones(mols, tmp_path):
    path = tmp_path / "mol.pdb"
    path.write_text("HETATM\n")
    with pytest.raises(CommandError) as caught:
        run("mols", str(path))
    assert str(caught.value) == (f"{path}: unknown molecule file extension '.pdb' "
                                 "(supported: .xyz, .extxyz, .sdf, .mol, .jsonl)")


def test_a_missing_dataset_lists_the_existing_ones(mols):
    with pytest.raises(CommandError) as caught:
        run("nope", str(FIXTURES / "water.xyz"))
    assert str(caught.value) == "no dataset 'nope' (existing: mols); give --create to make it"


def test_create_makes_the_dataset(db):
    out, _ = run("fresh", str(FIXTURES / "molecules.jsonl"), "--create")
    assert out == "fresh: 3 added, 0 already present, 3 records\n"
    assert Dataset.objects.get(name="fresh").record_count == 3


def test_small_batches_give_the_same_result(mols):
    out, _ = run("mols", str(FIXTURES / "frames.extxyz"), str(FIXTURES / "molecules.jsonl"),
                 "--batch-size", "1")
    assert out == "mols: 6 added, 0 already present, 6 records\n"


def test_it_shows_progress(mols):
    stream = StringIO()
    records_import(dataset=mols, paths=[FIXTURES / "frames.extxyz"], batch_size=2,
                   progress=Progress(verb="imported", stream=stream, every=0.0))
    assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == [
        "imported 2", "imported 3"]
    assert stream.getvalue().splitlines()[-1].endswith(", 100%)")


def test_progress_prints_rate_and_eta_every_few_seconds_only():
    now = [0.0]
    stream = StringIO()
    progress = Progress(verb="imported", total=1_000_000, stream=stream, every=2.0,
                        clock=lambda: now[0])
    for done, t in ((4_000, 1.0), (12_000, 30.0), (12_500, 31.0)):
        now[0] = t
        progress.update(done)
    assert stream.getvalue() == "imported 12,000/1,000,000 (400/s, eta 41m)\n"


# --- record ids are strings --------------------------------------------------------------

H2 = '"elements": ["H", "H"], "coordinates": [[0, 0, 0], [0, 0, 0.74]]'


def test_a_numeric_jsonl_id_is_refused_with_the_line_and_the_fix(mols, tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text(f'{{"id": "12345", {H2}}}\n{{"id": 12345, {H2}, "tag": "other"}}\n')

    with pytest.raises(CommandError) as caught:
        run("mols", str(path), "--on-error", "abort")

    assert str(caught.value) == (f'{path}:2: "id" must be a string (got the number 12345); '
                                 'write "12345" (--on-error abort: nothing was written)')
    assert inputs() == {}  # abort: nothing of the file


def test_a_numeric_jsonl_id_never_merges_with_its_string_twin(mols, tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text(f'{{"id": "12345", {H2}}}\n{{"id": 12345, {H2}, "tag": "other"}}\n')

    out, err = run("mols", str(path))

    # The second molecule is reported, not counted as "already present".
    assert err == f'skipped {path}:2: "id" must be a string (got the number 12345); write "12345"\n'
    assert out == "mols: 1 added, 0 already present, 1 records; 1 broken molecules skipped\n"
    assert "tag" not in inputs()["12345"]


@pytest.mark.parametrize("value, message", [
    ("7.0", '"id" must be a string (got the number 7.0); write "7.0"'),
    ("true", '"id" must be a string (got true/false true); write it in quotes'),
    ('["a"]', '"id" must be a string (got a list ["a"]); write it in quotes'),
    ('""', '"id" must be a non-empty string (got an empty one)'),
])
def test_other_non_string_jsonl_ids_are_refused(mols, tmp_path, value, message):
    path = tmp_path / "ids.jsonl"
    path.write_text(f'{{"id": {value}, {H2}}}\n')

    _, err = run("mols", str(path))

    assert err == f"skipped {path}:1: {message}\n"


def test_an_xyz_id_is_the_text_as_written(mols, tmp_path):
    frame = "2\n{comment}\nH 0 0 0\nH 0 0 0.74\n"
    path = tmp_path / "ids.extxyz"
    path.write_text("".join(frame.format(comment=c) for c in (
        "id=007", "id=7", "id=1.50", "id=1.5", 'id="T" energy=-1.0', "id=T energy=-2.0")))

    run("mols", str(path))

    # Read as numbers, 007 and 7 (1.50 and 1.5) would have been one record each.
    assert set(inputs()) == {"007", "7", "1.50", "1.5", "T"}


def test_an_xyz_id_keeps_its_text_when_ase_reads_the_frame(mols, tmp_path):
    path = tmp_path / "forces.extxyz"
    path.write_text("2\nProperties=species:S:1:pos:R:3:forces:R:3 id=0042\n"
                    "H 0 0 0 0 0 0.1\nH 0 0 0.74 0 0 -0.1\n")

    run("mols", str(path))

    assert list(inputs()) == ["0042"]
