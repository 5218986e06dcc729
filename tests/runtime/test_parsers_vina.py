"""vina.affinities against the real Vina 1.2.3 outputs of tests/fixtures and a live docking."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from workers.runtime.errors import ParseError
from workers.runtime.parsers.vina import affinities

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOCKING = FIXTURES / "vina/debian_testdata_seed42"
MANIFEST = [e for e in json.loads((FIXTURES / "MANIFEST.json").read_text())
            if e["program"] == "vina" and e.get("parsers")]
STDOUT = (DOCKING / "vina_stdout.txt").read_text()
PDBQT = (DOCKING / "out.pdbqt").read_text()


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: Path(e["file"]).name)
def test_it_reads_the_manifest_values(entry):
    expected = entry["expected"]
    values = affinities((FIXTURES / entry["file"]).read_text())
    count = expected.get("models") or len(expected["modes"])
    assert values == {
        "affinities": {"value": pytest.approx(expected["affinities_kcal_per_mol"], abs=1e-9),
                       "unit": "kcal/mol"},
        "rmsd_lb": {"value": pytest.approx(expected["rmsd_lb_angstrom"], abs=1e-9), "unit": "Å"},
        "rmsd_ub": {"value": pytest.approx(expected["rmsd_ub_angstrom"], abs=1e-9), "unit": "Å"},
        "best_affinity": {"value": expected["best_affinity_kcal_per_mol"], "unit": "kcal/mol"},
        "modes": {"value": count, "unit": "count"},
    }
    assert count == 9


def test_both_files_of_one_docking_agree():
    from_stdout, from_pdbqt = affinities(STDOUT), affinities(PDBQT)
    assert from_stdout["affinities"]["value"] == pytest.approx(
        from_pdbqt["affinities"]["value"], abs=0.005)


@pytest.mark.parametrize("text,message", [
    (STDOUT[:STDOUT.index("mode |")],
     "Vina stdout has no modes table (no '-----+----' rule): the docking did not finish"),
    (STDOUT[:STDOUT.index("   1       -10.43")],
     "Vina stdout's modes table has no rows: the output is truncated"),
    (STDOUT[:STDOUT.index("   5       -10.05") + 12],
     "Vina stdout's modes table is cut off after mode 4: the output is truncated"),
    (PDBQT[:PDBQT.index("ENDMDL\nMODEL 9")],
     "Vina PDBQT has 8 MODEL, 7 ENDMDL and 8 'REMARK VINA RESULT:' lines: "
     "the file is incomplete"),
    (PDBQT.replace("REMARK VINA RESULT:    -8.023      6.810     14.019", "REMARK VINA RESULT:"),
     "Vina PDBQT: 'REMARK VINA RESULT:' line 9 has 0 of its 3 numbers"),
    ((DOCKING / "ligand.pdbqt").read_text(),
     "not a Vina output: no 'AutoDock Vina' banner and no 'REMARK VINA RESULT:' lines"),
    ((FIXTURES / "xtb/water/xtb_stdout.txt").read_text(),
     "not a Vina output: no 'AutoDock Vina' banner and no 'REMARK VINA RESULT:' lines"),
    ("\n", "not a Vina output: the text is empty"),
], ids=["stdout-before-table", "stdout-without-rows", "stdout-cut-mid-row", "pdbqt-cut",
        "pdbqt-remark-without-numbers", "input-ligand", "xtb-stdout", "empty"])
def test_a_bad_input_is_refused_with_what_is_wrong(text, message):
    with pytest.raises(ParseError) as caught:
        affinities(text)
    assert str(caught.value) == message


@pytest.mark.slow
def test_it_reads_what_a_real_docking_writes(tmp_path):
    # The fixture's docking with exhaustiveness 1 on one CPU; --max_evals caps each Monte Carlo
    # run so it takes about 2 s instead of 15 s (the poses are worse; the tables are real).
    # The box of command.txt.
    run = subprocess.run(
        ["vina", "--receptor", str(DOCKING / "protein.pdbqt"),
         "--ligand", str(DOCKING / "ligand.pdbqt"),
         "--center_x", "11", "--center_y", "90.5", "--center_z", "57.5",
         "--size_x", "22", "--size_y", "24", "--size_z", "28",
         "--exhaustiveness", "1", "--seed", "42", "--cpu", "1", "--max_evals", "100000",
         "--out", "out.pdbqt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    from_stdout = affinities(run.stdout)
    from_pdbqt = affinities((tmp_path / "out.pdbqt").read_text())
    best = from_stdout["best_affinity"]["value"]
    assert best == pytest.approx(from_pdbqt["best_affinity"]["value"], abs=0.01)
    assert best < -5
    # The PDBQT holds the first modes of the table: those within energy_range (3) of the best.
    written = from_pdbqt["modes"]["value"]
    listed = from_stdout["affinities"]["value"]
    assert 1 <= written <= from_stdout["modes"]["value"]
    assert written == sum(1 for affinity in listed if affinity <= best + 3)
    assert from_pdbqt["affinities"]["value"] == pytest.approx(listed[:written], abs=0.01)
    assert from_pdbqt["rmsd_ub"]["value"] == pytest.approx(
        from_stdout["rmsd_ub"]["value"][:written], abs=0.01)
