"""`python -m workers.runtime.parse NAME FILE`, run as a real process on every manifest entry."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.test_parsers_xtb import parsers_of
from workers.runtime import registry

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/fixtures"
MANIFEST = json.loads((FIXTURES / "MANIFEST.json").read_text())
CASES = [(e, name) for e in MANIFEST if e["kind"] != "input"
         for name in (parsers_of(e) if e["program"] == "xtb" else e.get("parsers", []))]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers.runtime.parse", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def assert_one_line_error(run: subprocess.CompletedProcess, code: int, message: str):
    assert (run.returncode, run.stdout, run.stderr) == (code, "", f"parse: {message}\n")


@pytest.mark.parametrize("entry,name", CASES,
                         ids=lambda v: v if isinstance(v, str) else v["file"])
def test_it_prints_the_parsers_values_or_fails_cleanly(entry, name):
    path = FIXTURES / entry["file"]
    run = run_cli(name, str(path))
    if entry["expected"].get("parse_error_expected"):
        assert run.returncode == 3
        assert run.stdout == ""
        assert run.stderr.startswith(f"parse: {path}: ORCA output has no ")
        assert "'ORCA TERMINATED NORMALLY' line" in run.stderr
        assert len(run.stderr.splitlines()) == 1
        return
    assert (run.returncode, run.stderr) == (0, "")
    values = json.loads(run.stdout)
    in_process = registry.load_parser(name)(path.read_text(encoding="utf-8", errors="replace"))
    assert values == json.loads(json.dumps(in_process))
    if "energy" in values:
        assert values["energy"]["value"] == pytest.approx(entry["expected"]["energy_Eh"],
                                                          rel=0, abs=1e-6)


def test_every_parser_is_run_on_some_fixture():
    assert {registry.canonical_parser_name(name) for _, name in CASES} == set(
        registry.parser_names())


def test_an_unknown_parser_name_lists_the_known_ones():
    run = run_cli("orca.totl_energy", str(FIXTURES / "orca/dvb_raman_orca5.out"))
    known = ", ".join(registry.parser_names())
    assert_one_line_error(run, 2, f"unknown parser 'orca.totl_energy' (known: {known})")


def test_a_missing_file_is_a_usage_error(tmp_path):
    run = run_cli("orca.total_energy", str(tmp_path / "missing.out"))
    assert_one_line_error(run, 2, f"{tmp_path / 'missing.out'}: cannot read: "
                                  "No such file or directory")


def test_a_directory_is_a_usage_error(tmp_path):
    run = run_cli("xtb.energy", str(tmp_path))
    assert_one_line_error(run, 2, f"{tmp_path}: cannot read: Is a directory")


@pytest.mark.parametrize("name,fixture,message", [
    ("orca.total_energy", "xtb/water/xtb_stdout.txt",
     "not an ORCA output: no 'O   R   C   A' banner"),
    ("vina.affinities", "orca/dvb_raman_orca6.out",
     "not a Vina output: no 'AutoDock Vina' banner and no 'REMARK VINA RESULT:' lines"),
    ("xtb.homo_lumo_gap", "vina/debian_testdata_seed42/vina_stdout.txt",
     "not an xtb output: no 'x T B' banner and not a file xtb writes "
     "(xtb.homo_lumo_gap reads xtb stdout or xtbout.json)"),
])
def test_another_programs_output_is_a_parse_error(name, fixture, message):
    run = run_cli(name, str(FIXTURES / fixture))
    assert_one_line_error(run, 3, f"{FIXTURES / fixture}: {message}")


def test_a_truncated_xtb_stdout_is_a_parse_error(tmp_path):
    text = (FIXTURES / "xtb/methanol/xtb_stdout.txt").read_text()
    (tmp_path / "stdout").write_text(text[:len(text) // 2])
    run = run_cli("xtb.energy", str(tmp_path / "stdout"))
    assert_one_line_error(run, 3, f"{tmp_path / 'stdout'}: xtb stdout has no final "
                                  "'TOTAL ENERGY' summary: the run did not finish")


@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 8], ids=["empty", "binary"])
def test_an_empty_or_binary_file_is_a_parse_error(tmp_path, content):
    (tmp_path / "junk").write_bytes(content)
    run = run_cli("orca.gradient", str(tmp_path / "junk"))
    reason = "binary data (NUL bytes)" if content else "the text is empty"
    assert_one_line_error(run, 3, f"{tmp_path / 'junk'}: not an ORCA output: {reason}")


def test_help_lists_the_parsers_and_exit_codes():
    run = run_cli("--help")
    assert run.returncode == 0
    for name in registry.parser_names():
        assert f"\n  {name} " in run.stdout
    assert "  3  the file does not hold what the parser reads" in run.stdout
    assert "  2  usage error, unknown parser name, or the file cannot be read" in run.stdout


def test_a_missing_argument_is_a_usage_error():
    run = run_cli("orca.dipole")
    assert run.returncode == 2
    assert run.stderr.endswith("error: the following arguments are required: FILE\n")
