"""bench_peers.py runs its three systems on both benches and prints every row of both tables."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = ("htportal (submit, workers, collector)", "Parsl HTEX python_app", "plain RQ SimpleWorker")
# label, tasks/s (run), run s, start-up s, tasks/s (+start), load, note
ROW = re.compile(r"^(?P<label>.+?)\s+(?P<rate>[\d,.]+)\s+(?P<run>[\d.]+)\s+(?P<startup>[\d.]+)"
                 r"\s+[\d,.]+\s+[\d.]+\s+\S")


@pytest.mark.slow
def test_it_prints_both_tables_with_all_rows_and_ratios():
    done = subprocess.run([sys.executable, "bench/bench_peers.py", "--xtb-tasks", "3",
                           "--noop-tasks", "60"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    xtb, noop = out.split("\nxtb: 3 GFN2")[1], out.split("\nnoop: 60 no-op")[1]
    xtb = xtb.split("\nnoop: ")[0]
    for section in (xtb, noop):
        rows = {m["label"].strip(): m for line in section.splitlines()
                if (m := ROW.match(line)) and m["label"].strip() in ROWS}
        assert sorted(rows) == sorted(ROWS)
        assert all(float(m["run"]) >= 0 for m in rows.values())
        for peer in ROWS[1:]:
            assert re.search(rf"^ratio htportal / {re.escape(peer)}: [\d.]+ \(with start-up "
                             r"[\d.]+\)$", section, re.M)
    assert re.search(r"htportal overhead per task beyond xtb: median\(wall_s - xtb\) = -?\d+ ms",
                     xtb)
