"""The property parsers multitask models learn from: ORCA charges and orbital energies (checked
against cclib on the real ORCA outputs of tests/fixtures), ORCA's SCF convergence check, and
xtb's GFN1 dipole, quadrupole, charges and Wiberg bond orders (real xtb 6.5.1 outputs made here,
see tests/fixtures/README.md, and a live xtb run)."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import cclib
import pytest
from cclib.parser.utils import convertor

from workers.runtime import registry
from workers.runtime.errors import ParseError
from workers.runtime.parsers import orca, xtb

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEBYE_PER_AU = 2.541746473  # e·bohr in Debye (CODATA 2018), as xtb prints it
# Complete ORCA outputs cclib 1.8.1 reads to the end (it stops on dvb_raman_orca6's SCF table).
CCLIB_READS = ["orca/water_opt_freq_orca4.out", "orca/dvb_raman_orca5.out"]
COMPLETE_ORCA = CCLIB_READS + ["orca/dvb_raman_orca6.out"]


def text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8", errors="replace")


@pytest.mark.parametrize("name", CCLIB_READS)
def test_orca_charges_are_cclibs_last_mulliken_and_loewdin(name):
    data = cclib.io.ccread(str(FIXTURES / name))
    values = orca.charges(text(name))
    assert set(values) == {"mulliken_charges", "loewdin_charges"}
    assert values["mulliken_charges"]["unit"] == "e"
    assert values["mulliken_charges"]["value"] == pytest.approx(
        list(data.atomcharges["mulliken"]), abs=1e-9)
    assert values["loewdin_charges"]["value"] == pytest.approx(
        list(data.atomcharges["lowdin"]), abs=1e-9)
    assert len(values["mulliken_charges"]["value"]) == data.natom


@pytest.mark.parametrize("name", CCLIB_READS)
def test_orca_orbital_energies_are_cclibs_last_ones(name):
    data = cclib.io.ccread(str(FIXTURES / name))
    values = orca.orbital_energies(text(name))
    energies_ev = [convertor(e, "hartree", "eV") for e in values["orbital_energies"]["value"]]
    assert energies_ev == pytest.approx(list(data.moenergies[-1]), abs=2e-4)
    homo = data.homos[0]
    assert values["homo"]["value"] == values["orbital_energies"]["value"][homo]
    assert values["lumo"]["value"] == values["orbital_energies"]["value"][homo + 1]
    assert values["homo_lumo_gap"]["value"] == pytest.approx(
        values["lumo"]["value"] - values["homo"]["value"], abs=1e-12)
    assert values["homo_lumo_gap_ev"]["value"] == pytest.approx(
        convertor(values["homo_lumo_gap"]["value"], "hartree", "eV"), abs=1e-6)


def test_orca_water_gap_is_the_printed_rows():
    # ORCA 4.1.2's last table: orbital 4 (-0.285655 Eh) is the HOMO, orbital 5 (0.056177) the LUMO.
    values = orca.orbital_energies(text("orca/water_opt_freq_orca4.out"))
    assert (values["homo"]["value"], values["lumo"]["value"]) == (-0.285655, 0.056177)
    assert values["occupations"]["value"][:6] == [2.0] * 5 + [0.0]


def unrestricted(table: str) -> str:
    """An ORCA output whose last orbital table is replaced by `table` (an in-memory edit, for the
    unrestricted layout no fixture here has)."""
    original = text("orca/water_opt_freq_orca4.out")
    start = original.rfind("ORBITAL ENERGIES")
    end = original.find("MOLECULAR ORBITALS", start)
    return original[:start] + table + original[end - 19:]


def test_orca_unrestricted_orbitals_are_read_per_spin():
    table = ("ORBITAL ENERGIES\n----------------\n                 SPIN UP ORBITALS\n"
             "  NO   OCC          E(Eh)            E(eV) \n"
             "   0   1.0000     -0.500000       -13.6057 \n"
             "   1   0.0000      0.100000         2.7211 \n\n"
             "                 SPIN DOWN ORBITALS\n"
             "  NO   OCC          E(Eh)            E(eV) \n"
             "   0   0.0000     -0.200000        -5.4423 \n"
             "   1   0.0000      0.300000         8.1634 \n\n")
    values = orca.orbital_energies(unrestricted(table))
    assert values["orbital_energies_alpha"]["value"] == [-0.5, 0.1]
    assert values["orbital_energies_beta"]["value"] == [-0.2, 0.3]
    assert (values["homo"]["value"], values["lumo"]["value"]) == (-0.5, -0.2)
    assert values["homo_lumo_gap"]["value"] == pytest.approx(0.3)


@pytest.mark.parametrize("parser", ["orca.total_energy", "orca.gradient", "orca.dipole",
                                    "orca.charges", "orca.orbital_energies"])
def test_an_unconverged_scf_is_no_result(parser):
    # In-memory: every SCF of the real output reports failure, as ORCA prints it.
    original = text("orca/water_opt_freq_orca4.out")
    edited = re.sub(r"SCF CONVERGED AFTER +\d+ CYCLES", "SCF NOT CONVERGED AFTER 125 CYCLES",
                    original)
    registry.load_parser(parser)(original)  # the real output parses
    with pytest.raises(ParseError, match=r"the SCF did not converge \(SCF NOT CONVERGED AFTER "
                                         r"125 CYCLES\)"):
        registry.load_parser(parser)(edited)


def test_only_the_scf_before_the_block_counts():
    # The last SCF (of the frequency run) failed; the gradient printed before it stands.
    original = text("orca/water_opt_freq_orca4.out")
    last = original.rfind("SCF CONVERGED AFTER   3 CYCLES")
    edited = original[:last] + "SCF NOT CONVERGED AFTER 125 CYCLES" + original[last + 30:]
    assert orca.gradient(edited) == orca.gradient(original)
    with pytest.raises(ParseError, match="did not converge"):
        orca.total_energy(edited)


def test_an_earlier_unconverged_scf_that_a_later_one_fixed_is_fine():
    original = text("orca/water_opt_freq_orca4.out")
    first = original.find("SCF CONVERGED AFTER  10 CYCLES")
    edited = original[:first] + "SCF NOT CONVERGED AFTER 125 CYCLE" + original[first + 33:]
    assert orca.total_energy(edited) == orca.total_energy(original)


def test_orca_charges_need_a_finished_run():
    with pytest.raises(ParseError, match="did not finish"):
        orca.charges(text("orca/dvb_gopt_orca5_no_termination.out"))


@pytest.mark.parametrize("folder", ["water_gfn1", "methanol_gfn1"])
def test_the_gfn1_dipole_is_read_and_its_magnitude_is_the_printed_debye(folder):
    stdout = text(f"xtb/{folder}/xtb_stdout.txt")
    values = xtb.dipole(stdout)
    printed_debye = float(stdout.split("total (Debye):")[-1].split()[0])
    assert values["dipole"]["unit"] == "e·bohr"
    assert values["dipole_magnitude"]["value"] * DEBYE_PER_AU == pytest.approx(printed_debye,
                                                                               abs=2e-3)
    # The energy and gradient of a GFN1 run are there too: nothing else fails with the dipole.
    assert xtb.energy(stdout)["energy"]["value"] < 0
    assert len(xtb.gradient(text(f"xtb/{folder}/gradient"))["gradient"]["value"]) > 0


def test_the_gfn1_water_dipole_is_the_printed_row():
    assert xtb.dipole(text("xtb/water_gfn1/xtb_stdout.txt"))["dipole"]["value"] == [
        0.6517, 0.9107, -0.1411]


def test_the_gfn2_quadrupole_is_the_full_row():
    assert xtb.quadrupole(text("xtb/water_gfn2_props/xtb_stdout.txt")) == {
        "quadrupole": {"value": [3.032, 1.522, -0.687, -0.149, -0.135, -2.344],
                       "unit": "e·bohr²"}}
    with pytest.raises(ParseError, match="only GFN2 prints one"):
        xtb.quadrupole(text("xtb/water_gfn1/xtb_stdout.txt"))


def test_gfn1_charges_are_the_mulliken_column_of_stdout():
    stdout = text("xtb/water_gfn1/xtb_stdout.txt")
    table = stdout[stdout.rfind("Mulliken/CM5 charges"):].splitlines()[1:4]
    printed = [float(row.split()[1]) for row in table]
    values = xtb.charges(text("xtb/water_gfn1/charges"))
    assert values["charges"]["unit"] == "e"
    assert values["charges"]["value"] == pytest.approx(printed, abs=1e-5)
    assert sum(values["charges"]["value"]) == pytest.approx(0, abs=1e-6)


def test_wiberg_bond_orders_keep_xtbs_atom_numbers():
    assert xtb.wbo(text("xtb/water_gfn1/wbo")) == {"wbo": {"value": [
        [1, 2, pytest.approx(0.8958976, abs=1e-7)], [1, 3, pytest.approx(0.8958979, abs=1e-7)]],
        "unit": "1"}}


@pytest.mark.parametrize("parser, fixture", [("xtb.charges", "xtb/water/xtb_stdout.txt"),
                                             ("xtb.wbo", "xtb/water/gradient"),
                                             ("xtb.charges", "xtb/water_gfn1/wbo")])
def test_the_file_parsers_refuse_other_files(parser, fixture):
    with pytest.raises(ParseError):
        registry.load_parser(parser)(text(fixture))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xtb") is None, reason="xtb is installed by bin/install")
def test_a_live_gfn1_run_gives_dipole_charges_and_bond_orders(tmp_path):
    shutil.copy(FIXTURES / "xtb/water_gfn1/water.xyz", tmp_path)
    run = subprocess.run(["xtb", "water.xyz", "--gfn", "1"], cwd=tmp_path, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                         "OMP_STACKSIZE": "500M"}, timeout=120)
    assert run.returncode == 0, run.stderr[-500:]
    dipole = xtb.dipole(run.stdout)
    assert dipole["dipole"]["value"] == xtb.dipole(text("xtb/water_gfn1/xtb_stdout.txt"))[
        "dipole"]["value"]
    charges = xtb.charges((tmp_path / "charges").read_text())["charges"]["value"]
    assert len(charges) == 3 and math.isclose(sum(charges), 0, abs_tol=1e-6)
    assert len(xtb.wbo((tmp_path / "wbo").read_text())["wbo"]["value"]) == 2


UNRESTRICTED = "orca/dvb_sp_un_orca5.out"  # cation doublet, UKS, Print[P_Hirshfeld]


def test_unrestricted_orbitals_and_hirshfeld_charges_are_cclibs():
    data = cclib.io.ccread(str(FIXTURES / UNRESTRICTED))
    values = orca.orbital_energies(text(UNRESTRICTED))
    for spin, suffix in ((0, "_alpha"), (1, "_beta")):
        energies_ev = [convertor(e, "hartree", "eV")
                       for e in values[f"orbital_energies{suffix}"]["value"]]
        assert energies_ev == pytest.approx(list(data.moenergies[spin]), abs=2e-4)
    alpha_homo = values["orbital_energies_alpha"]["value"][data.homos[0]]
    beta_homo = values["orbital_energies_beta"]["value"][data.homos[1]]
    assert values["homo"]["value"] == max(alpha_homo, beta_homo)
    charges = orca.charges(text(UNRESTRICTED))
    assert set(charges) == {"mulliken_charges", "loewdin_charges", "hirshfeld_charges"}
    for key, name in (("mulliken_charges", "mulliken"), ("loewdin_charges", "lowdin"),
                      ("hirshfeld_charges", "hirshfeld")):
        assert charges[key]["value"] == pytest.approx(list(data.atomcharges[name]), abs=1e-9)
    # A cation: the Hirshfeld charges add up to +1 (ORCA's own TOTAL line: 1.000171).
    assert sum(charges["hirshfeld_charges"]["value"]) == pytest.approx(1.000171, abs=1e-5)
