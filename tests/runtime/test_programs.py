"""programs.run_program with real child processes: timeout, stop request, CPU time, heartbeat."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from workers.runtime import errors
from workers.runtime.programs import Control, find_program, output_tail, run_program


def _gone(pid: int) -> bool:
    """Whether pid no longer runs (a zombie left to an init that does not reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def test_it_writes_stdout_and_stderr_to_files_in_the_workdir(tmp_path):
    result = run_program(["sh", "-c", "echo out; echo err >&2"], workdir=tmp_path)

    assert (tmp_path / "stdout").read_text() == "out\n"
    assert (tmp_path / "stderr").read_text() == "err\n"
    assert (result.exit_code, result.name) == (0, "sh")
    assert result.wall_s >= 0


def test_a_timeout_kills_the_program_within_the_deadline(tmp_path):
    started = time.monotonic()
    with pytest.raises(errors.ProgramTimeout, match=r"^sleep: stopped after 1 s: the job timeout"):
        run_program(["sleep", "30"], workdir=tmp_path, deadline=started + 1.0)
    assert time.monotonic() - started < 2.5


def test_the_controls_deadline_counts_too(tmp_path):
    control = Control(deadline=time.monotonic() + 0.5)
    with pytest.raises(errors.ProgramTimeout):
        run_program(["sleep", "30"], workdir=tmp_path, control=control, deadline=None)


def test_a_program_is_not_started_after_the_deadline(tmp_path):
    with pytest.raises(errors.ProgramTimeout, match="not started"):
        run_program(["true"], workdir=tmp_path, deadline=time.monotonic() - 1)
    assert not (tmp_path / "stdout").exists()


def test_a_stop_request_kills_the_whole_group_and_raises_interrupted(tmp_path):
    asked = time.monotonic() + 0.5
    control = Control(should_stop=lambda: time.monotonic() > asked)
    script = "sleep 30 & echo $! > grandchild; wait"
    with pytest.raises(errors.Interrupted, match="sh: stopped on a stop request"):
        run_program(["sh", "-c", script], workdir=tmp_path, control=control)
    assert time.monotonic() - asked < 1.0
    grandchild = int((tmp_path / "grandchild").read_text())
    deadline = time.monotonic() + 2
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_a_program_ignoring_sigterm_is_killed_after_the_grace_time(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    asked = time.monotonic() + 0.3
    control = Control(should_stop=lambda: time.monotonic() > asked)
    with pytest.raises(errors.Interrupted):
        run_program([sys.executable, "-c", code], workdir=tmp_path, control=control)
    waited = time.monotonic() - asked
    assert 1.8 < waited < 3.0


def test_it_counts_the_childs_cpu_seconds(tmp_path):
    code = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    result = run_program([sys.executable, "-c", code], workdir=tmp_path)
    assert 0.4 <= result.cpu_s < 2.0


def test_it_counts_cpu_seconds_of_grandchildren_the_child_waited_for(tmp_path):
    code = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    script = f"{sys.executable} -c '{code}'; true"
    result = run_program(["sh", "-c", script], workdir=tmp_path)
    assert result.cpu_s >= 0.3


def test_it_calls_the_heartbeat_while_it_waits(tmp_path):
    beats = []
    control = Control(heartbeat=lambda: beats.append(time.monotonic()), heartbeat_interval=0.2)
    run_program(["sleep", "1.1"], workdir=tmp_path, control=control)
    assert 4 <= len(beats) <= 6


def test_a_missing_executable_fails_with_where_to_set_it(tmp_path, monkeypatch):
    monkeypatch.delenv("ORCA_EXE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(errors.ProgramNotFound) as caught:
        find_program("orca")
    assert str(caught.value) == "orca: program not found (set ORCA_EXE or PATH)"
    assert caught.value.fault == "worker"
    with pytest.raises(errors.ProgramNotFound) as caught:
        run_program(["orca", "orca.inp"], workdir=tmp_path)
    assert str(caught.value) == "orca: program not found (set ORCA_EXE or PATH)"


def test_orca_exe_is_used_by_its_full_path(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCA_EXE", "/bin/true")
    assert find_program("orca") == "/bin/true"
    monkeypatch.setenv("ORCA_EXE", str(tmp_path / "nothing"))
    with pytest.raises(errors.ProgramNotFound,
                       match=r"ORCA_EXE='.*nothing' is not an executable"):
        find_program("orca")


def test_a_non_zero_exit_fails_with_the_exit_code_and_the_last_lines(tmp_path):
    script = "for i in $(seq 1 50); do echo line $i; done; echo 'it broke' >&2; exit 3"
    with pytest.raises(errors.ProgramFailed) as caught:
        run_program(["sh", "-c", script], workdir=tmp_path)
    assert str(caught.value) == "sh: exited with code 3"
    tail = caught.value.output_tail.splitlines()
    assert len(tail) == 20
    assert tail[-2:] == ["line 50", "it broke"]


def test_without_check_a_non_zero_exit_is_returned(tmp_path):
    result = run_program(["sh", "-c", "exit 4"], workdir=tmp_path, check=False)
    assert result.exit_code == 4


def test_a_program_killed_by_a_signal_says_which(tmp_path):
    with pytest.raises(errors.ProgramFailed, match="^sh: was killed by signal SIGKILL$"):
        run_program(["sh", "-c", "kill -9 $$"], workdir=tmp_path)


def test_the_tail_gives_stderr_at_least_half_when_both_are_long(tmp_path):
    (tmp_path / "out").write_text("".join(f"o{i}\n" for i in range(30)) + "\n\n")
    (tmp_path / "err").write_text("".join(f"e{i}\n" for i in range(30)))
    tail = output_tail(tmp_path / "out", tmp_path / "err").splitlines()
    assert tail == [f"o{i}" for i in range(20, 30)] + [f"e{i}" for i in range(20, 30)]


def test_the_program_gets_the_variables_it_is_given_on_top_of_a_clean_environment(
        tmp_path, monkeypatch):
    monkeypatch.setenv("HT_WORKER_ONLY", "1")
    run_program(["sh", "-c", "echo $HT_X ${HT_WORKER_ONLY:-unset}"], workdir=tmp_path,
                env={"HT_X": "42"})
    assert (tmp_path / "stdout").read_text() == "42 unset\n"


@pytest.mark.parametrize("pidfd", [True, False])
def test_a_short_program_is_seen_to_end_long_before_the_next_100_ms_poll(tmp_path, monkeypatch,
                                                                         pidfd):
    """A 60 ms xtb run used to cost 100 ms: the worker only looked every POLL_SECONDS."""
    if not pidfd:  # an old kernel: growing steps instead of the pidfd
        def no_pidfd(pid):
            raise OSError(38, "Function not implemented")
        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    walls = []
    for _ in range(3):
        started = time.monotonic()
        result = run_program(["sleep", "0.01"], workdir=tmp_path)
        walls.append(time.monotonic() - started)
        assert result.exit_code == 0
    assert min(walls) < 0.08
