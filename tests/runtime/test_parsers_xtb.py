"""xtb parsers against the real xtb 6.5.1 outputs of tests/fixtures and a live xtb run."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from workers.runtime import registry
from workers.runtime.errors import ParseError
from workers.runtime.parsers import xtb

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MANIFEST = [e for e in json.loads((FIXTURES / "MANIFEST.json").read_text())
            if e["program"] == "xtb" and e["kind"] == "output" and "stderr" not in e["file"]]
# The files the manifest lists no parser for, with the parsers that now read them too.
ALSO_READ_BY = {
    "energy": ["xtb.energy"],
    "gradient": ["xtb.energy"],
    "engrad": ["xtb.energy", "xtb.gradient"],
    "xtbout.json": ["xtb.energy", "xtb.dipole", "xtb.homo_lumo_gap"],
}
# Each stdout's own 'HL-Gap ... Eh' line (7 decimals): pins the eV -> Eh conversion.
PRINTED_GAP_EH = {"xtb/water/xtb_stdout.txt": 0.5203669, "xtb/methanol/xtb_stdout.txt": 0.4688713}


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8", errors="replace")


def parsers_of(entry: dict) -> list:
    name = Path(entry["file"]).name
    kind = "engrad" if name.endswith(".engrad") else name
    return entry.get("parsers", []) + ALSO_READ_BY.get(kind, [])


def assert_gradient(values: dict, expected: dict):
    gradient = values["gradient"]
    assert gradient["unit"] == "Eh/bohr"
    assert [len(row) for row in gradient["value"]] == [3] * expected["natoms"]
    for got, want in zip(gradient["value"], expected["gradient_Eh_per_bohr"]):
        assert got == pytest.approx(want, rel=0, abs=1e-9)


def assert_expected(name: str, values: dict, entry: dict):
    expected = entry["expected"]
    if name == "xtb.energy":
        energy = pytest.approx(expected["energy_Eh"], rel=0, abs=1e-6)
        assert values == {"energy": {"value": energy, "unit": "Eh"}}
    elif name == "xtb.gradient":
        assert set(values) == {"energy", "gradient"}
        assert values["energy"]["value"] == pytest.approx(expected["energy_Eh"], rel=0, abs=1e-6)
        assert_gradient(values, expected)
    elif name == "xtb.dipole":
        assert set(values) == {"dipole", "dipole_magnitude"}
        assert values["dipole"] == {"value": pytest.approx(expected["dipole_au"], rel=0, abs=1e-6),
                                    "unit": "e·bohr"}
        # The manifest rounds the magnitude to 4 decimals, and gives none for xtbout.json.
        magnitude = expected.get("dipole_magnitude_au") or math.hypot(*expected["dipole_au"])
        assert values["dipole_magnitude"]["value"] == pytest.approx(magnitude, rel=0, abs=5e-5)
    else:
        assert values["homo_lumo_gap_ev"] == {
            "value": pytest.approx(expected["homo_lumo_gap_eV"], rel=0, abs=1e-9), "unit": "eV"}
        gap = values["homo_lumo_gap"]
        assert gap["unit"] == "Eh"
        assert gap["value"] == pytest.approx(expected["homo_lumo_gap_eV"] / 27.211386245988,
                                             rel=1e-12)
        if entry["file"] in PRINTED_GAP_EH:
            assert gap["value"] == pytest.approx(PRINTED_GAP_EH[entry["file"]], rel=0, abs=1e-7)


@pytest.mark.parametrize("entry,name", [(e, n) for e in MANIFEST for n in parsers_of(e)],
                         ids=lambda v: v if isinstance(v, str) else v["file"])
def test_it_reads_the_manifest_values(entry, name):
    values = registry.load_parser(name)(fixture_text(entry["file"]))
    assert_expected(name, values, entry)


def test_every_xtb_output_is_read_by_some_parser():
    assert {e["file"] for e in MANIFEST if parsers_of(e)} == {e["file"] for e in MANIFEST}
    assert len(MANIFEST) == 9


def test_it_takes_the_last_cycle_of_a_gradient_file():
    text = fixture_text("xtb/water/gradient")
    first = text.replace("-5.07020819730", "-5.00000000000").replace("E-03", "E-01")
    values = xtb.gradient(first.replace("$end", "") + text.partition("\n")[2])
    assert values["energy"]["value"] == -5.0702081973
    assert values["gradient"]["value"][0] == [-8.6733579814178E-03, -1.2125365409993E-02,
                                              1.8791080257630E-03]


WATER_STDOUT = fixture_text("xtb/water/xtb_stdout.txt")
NOT_XTB = "not an xtb output: no 'x T B' banner and not a file xtb writes"


@pytest.mark.parametrize("name,text,message", [
    ("xtb.energy", WATER_STDOUT[:len(WATER_STDOUT) // 2],
     "xtb stdout has no final 'TOTAL ENERGY' summary: the run did not finish"),
    ("xtb.dipole", WATER_STDOUT[:len(WATER_STDOUT) // 2],
     "xtb stdout has no final 'TOTAL ENERGY' summary: the run did not finish"),
    ("xtb.homo_lumo_gap", WATER_STDOUT[:WATER_STDOUT.index("| GRADIENT NORM")],
     "xtb stdout: the final summary box is cut off: the output is truncated"),
    ("xtb.gradient", fixture_text("xtb/water/gradient").replace("$end", ""),
     "xtb gradient file has no '$end' line after '$grad': the file is incomplete"),
    ("xtb.gradient", fixture_text("xtb/water/gradient").replace(
        "   1.6730121193611E-03   7.9251083295208E-03  -1.2281810271504E-03\n", ""),
     "xtb gradient file: the last cycle has 3 atoms but 2 gradient rows"),
    ("xtb.energy", fixture_text("xtb/water/energy")[:40],
     "xtb energy file has no '$end' line after '$energy': the file is incomplete"),
    ("xtb.gradient", fixture_text("xtb/water/water.engrad")[:400],
     "engrad file: 12 data lines, 14 expected for 3 atoms: the file is incomplete"),
    ("xtb.gradient", WATER_STDOUT,
     "xtb.gradient cannot read xtb stdout: give it an xtb 'gradient' file ($grad) "
     "or an .engrad file"),
    ("xtb.dipole", fixture_text("xtb/water/energy"),
     "xtb.dipole cannot read an xtb 'energy' file ($energy): give it xtb stdout or xtbout.json"),
    ("xtb.energy", fixture_text("orca/water_opt_freq_orca4.out"),
     f"{NOT_XTB} (xtb.energy reads xtb stdout, an xtb 'energy' file ($energy), an xtb "
     "'gradient' file ($grad), an .engrad file or xtbout.json)"),
    ("xtb.energy", fixture_text("vina/debian_testdata_seed42/out.pdbqt"),
     f"{NOT_XTB} (xtb.energy reads xtb stdout, an xtb 'energy' file ($energy), an xtb "
     "'gradient' file ($grad), an .engrad file or xtbout.json)"),
    ("xtb.homo_lumo_gap", fixture_text("xtb/water/xtb_stderr.txt"),
     f"{NOT_XTB} (xtb.homo_lumo_gap reads xtb stdout or xtbout.json)"),
    ("xtb.dipole", "", "not an xtb output: the text is empty"),
], ids=["stdout-cut-in-half", "dipole-of-stdout-cut-in-half", "stdout-cut-in-summary",
        "grad-without-end", "grad-missing-a-row", "energy-cut", "engrad-cut", "stdout-for-grad",
        "energy-for-dipole", "orca-output", "vina-pdbqt", "stderr", "empty"])
def test_a_bad_input_is_refused_with_what_is_wrong(name, text, message):
    with pytest.raises(ParseError) as caught:
        registry.load_parser(name)(text)
    assert str(caught.value) == message


def test_a_cut_json_file_is_refused():
    with pytest.raises(ParseError) as caught:
        xtb.dipole(fixture_text("xtb/water/xtbout.json")[:300])
    assert str(caught.value) == ("xtbout.json is not valid JSON: "
                                 "Unterminated string starting at: line 10 column 4 (char 286)")


@pytest.mark.slow
def test_it_reads_what_a_real_xtb_run_writes(tmp_path):
    shutil.copy(FIXTURES / "xtb/methanol/methanol.xyz", tmp_path / "mol.xyz")
    run = subprocess.run(["xtb", "mol.xyz", "--gfn", "2", "--grad"], cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    from_stdout = xtb.energy(run.stdout)["energy"]["value"]
    from_energy_file = xtb.energy((tmp_path / "energy").read_text())["energy"]["value"]
    from_gradient_file = xtb.gradient((tmp_path / "gradient").read_text())
    assert from_stdout == pytest.approx(from_energy_file, rel=0, abs=1e-9)
    assert from_gradient_file["energy"]["value"] == pytest.approx(from_stdout, rel=0, abs=1e-9)
    assert [len(row) for row in from_gradient_file["gradient"]["value"]] == [3] * 6
    # Same program, same input as the fixture: the same numbers.
    assert from_stdout == pytest.approx(-8.22549833576, rel=0, abs=1e-8)
    assert xtb.homo_lumo_gap(run.stdout)["homo_lumo_gap_ev"]["value"] == pytest.approx(
        12.758637026688, rel=0, abs=1e-6)
