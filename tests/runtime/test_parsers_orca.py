"""ORCA parsers against the real outputs of tests/fixtures (MANIFEST.json) and against cclib."""
from __future__ import annotations

import json
import time
from pathlib import Path

import cclib
import pytest
from cclib.parser.utils import convertor

from workers.runtime import registry
from workers.runtime.errors import ParseError
from workers.runtime.parsers import orca

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MANIFEST = [e for e in json.loads((FIXTURES / "MANIFEST.json").read_text())
            if e["program"] == "orca"]
COMPLETE = [e for e in MANIFEST if e["kind"] == "output"]
TRUNCATED = [e for e in MANIFEST if e.get("expected", {}).get("parse_error_expected")]
ALL_NAMES = ["orca.total_energy", "orca.gradient", "orca.dipole"]
NO_TERMINATION = "ORCA output has no 'ORCA TERMINATED NORMALLY' line: the run did not finish"
TERMINATION_LINE = "\n                             ****ORCA TERMINATED NORMALLY****\n"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8", errors="replace")


def assert_matrix_close(actual, expected, tolerance):
    assert [len(row) for row in actual] == [len(row) for row in expected]
    for i, (got_row, want_row) in enumerate(zip(actual, expected)):
        for got, want in zip(got_row, want_row):
            assert abs(got - want) <= tolerance, f"row {i + 1}: {got_row} != {want_row}"


def assert_expected(name: str, values: dict, expected: dict):
    """The named values of parser `name` against a manifest entry's `expected`."""
    kind = registry.canonical_parser_name(name)
    if kind == "orca.total_energy":
        assert set(values) == {"energy"}
        assert values["energy"]["unit"] == "Eh"
        assert abs(values["energy"]["value"] - expected["energy_Eh"]) <= 1e-6
    elif kind == "orca.gradient":
        assert set(values) == {"gradient"}
        assert values["gradient"]["unit"] == "Eh/bohr"
        assert len(values["gradient"]["value"]) == expected["natoms"]
        assert_matrix_close(values["gradient"]["value"], expected["gradient_Eh_per_bohr"], 1e-9)
    else:
        assert set(values) == {"dipole", "dipole_magnitude"}
        assert values["dipole"]["unit"] == values["dipole_magnitude"]["unit"] == "e·bohr"
        assert values["dipole"]["value"] == pytest.approx(expected["dipole_au"], rel=0, abs=1e-6)
        assert abs(values["dipole_magnitude"]["value"] - expected["dipole_magnitude_au"]) <= 1e-6


@pytest.mark.parametrize("entry,name", [(e, n) for e in COMPLETE for n in e["parsers"]],
                         ids=lambda v: v if isinstance(v, str) else Path(v["file"]).stem)
def test_it_reads_the_manifest_values(entry, name):
    values = registry.load_parser(name)(fixture_text(entry["file"]))
    assert_expected(name, values, entry["expected"])


def test_it_takes_the_last_of_several_blocks():
    # 4 optimisation cycles, then a final single point: 5 energies and 4 gradients.
    text = fixture_text("orca/water_opt_freq_orca4.out")
    assert orca.total_energy(text)["energy"]["value"] == -76.348972603816
    assert orca.gradient(text)["gradient"]["value"][0] == [-0.0, -0.0, 0.000234525]


def test_the_dipole_magnitude_is_orcas_own():
    # ORCA computes it before rounding the components, so it is the better number.
    text = fixture_text("orca/water_opt_freq_orca4.out")
    text = text.replace("Magnitude (a.u.)       :      0.94176",
                        "Magnitude (a.u.)       :      0.94177")
    assert orca.dipole(text)["dipole_magnitude"] == {"value": 0.94177, "unit": "e·bohr"}


@pytest.mark.parametrize("entry", TRUNCATED, ids=lambda e: Path(e["file"]).stem)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_a_truncated_output_is_refused(entry, name):
    expected = {
        "orca/dvb_sp_dft_orca6_truncated_midscf.out":
            "ORCA output has no '{marker}' {kind} and no 'ORCA TERMINATED NORMALLY' line: "
            "the run did not finish",
        "orca/dvb_gopt_orca5_no_termination.out": NO_TERMINATION,
    }[entry["file"]]
    marker, kind = {"orca.total_energy": ("FINAL SINGLE POINT ENERGY", "line"),
                    "orca.gradient": ("CARTESIAN GRADIENT", "block"),
                    "orca.dipole": ("Total Dipole Moment", "line")}[name]
    with pytest.raises(ParseError) as caught:
        registry.load_parser(name)(fixture_text(entry["file"]))
    assert str(caught.value) == expected.format(marker=marker, kind=kind)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_only_the_termination_line_stops_the_unterminated_optimisation(name):
    # The manifest lists the blocks' values for reference: with the line back, they are read.
    entry = next(e for e in TRUNCATED if "no_termination" in e["file"])
    text = fixture_text(entry["file"]) + TERMINATION_LINE
    assert_expected(name, registry.load_parser(name)(text), entry["expected"])


def test_a_rerun_appended_after_a_finished_run_is_refused():
    text = (fixture_text("orca/dvb_raman_orca5.out")
            + fixture_text("orca/dvb_gopt_orca5_no_termination.out"))
    with pytest.raises(ParseError) as caught:
        orca.total_energy(text)
    assert str(caught.value) == (
        "ORCA output has no 'ORCA TERMINATED NORMALLY' line after its last "
        "'FINAL SINGLE POINT ENERGY' line: the last run did not finish")


def test_a_finished_run_without_a_gradient_says_so():
    text = fixture_text("orca/dvb_raman_orca5.out").replace("CARTESIAN GRADIENT", "CARTESIAN")
    with pytest.raises(ParseError) as caught:
        orca.gradient(text)
    assert str(caught.value) == (
        "ORCA output has no 'CARTESIAN GRADIENT' block: "
        "the run computed no gradient (EnGrad, Opt)")


@pytest.mark.parametrize("text,message", [
    (fixture_text("xtb/water/xtb_stdout.txt"), "not an ORCA output: no 'O   R   C   A' banner"),
    (fixture_text("vina/debian_testdata_seed42/vina_stdout.txt"),
     "not an ORCA output: no 'O   R   C   A' banner"),
    ("", "not an ORCA output: the text is empty"),
    (" \n\n", "not an ORCA output: the text is empty"),
    (bytes(range(256)).decode("utf-8", errors="replace"),
     "not an ORCA output: binary data (NUL bytes)"),
], ids=["xtb-stdout", "vina-stdout", "empty", "blank", "binary"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_another_programs_output_is_refused(name, text, message):
    with pytest.raises(ParseError) as caught:
        registry.load_parser(name)(text)
    assert str(caught.value) == message


# cclib 1.8.1 cannot read ORCA 6 outputs (IndexError in its SCF-iteration reader), so the
# ORCA 6 fixture is cross-checked against the manifest only. The unterminated optimisation is
# read with its termination line put back, which adds three cycles of "last block" choices.
CCLIB_READABLE = {
    "dvb_raman_orca5": fixture_text("orca/dvb_raman_orca5.out"),
    "water_opt_freq_orca4": fixture_text("orca/water_opt_freq_orca4.out"),
    "dvb_gopt_orca5": fixture_text("orca/dvb_gopt_orca5_no_termination.out") + TERMINATION_LINE,
}


@pytest.fixture(scope="module", params=sorted(CCLIB_READABLE))
def cclib_pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("cclib") / f"{request.param}.out"
    path.write_text(CCLIB_READABLE[request.param])
    return CCLIB_READABLE[request.param], cclib.io.ccread(str(path))


def test_the_energy_agrees_with_cclib(cclib_pair):
    text, data = cclib_pair
    theirs = convertor(data.scfenergies[-1], "eV", "hartree")
    assert abs(orca.total_energy(text)["energy"]["value"] - theirs) <= 1e-6


def test_the_gradient_agrees_with_cclib(cclib_pair):
    text, data = cclib_pair
    assert_matrix_close(orca.gradient(text)["gradient"]["value"], data.grads[-1].tolist(), 1e-9)


def test_the_dipole_agrees_with_cclib(cclib_pair):
    # cclib gives moments[1] in Debye and converts only from e·bohr to Debye.
    text, data = cclib_pair
    ours = [convertor(x, "ebohr", "Debye") for x in orca.dipole(text)["dipole"]["value"]]
    assert ours == pytest.approx(data.moments[1].tolist(), rel=0, abs=1e-4)


def test_it_parses_half_a_megabyte_in_milliseconds():
    text = CCLIB_READABLE["dvb_gopt_orca5"]  # 514 kB, 4 energies, 3 gradients
    for parser in (orca.total_energy, orca.gradient, orca.dipole):
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            parser(text)
            timings.append(time.perf_counter() - started)
        assert min(timings) < 0.005, f"{parser.__name__}: {min(timings) * 1000:.1f} ms"
