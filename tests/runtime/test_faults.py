"""Which failures are the node's: execute marks them, FailureStreak finds repeated ones."""
from __future__ import annotations

from workers.runtime import faults
from workers.runtime.execute import execute


def doc(record_id: str, *outcomes: dict) -> dict:
    return {"record_id": record_id,
            "arg_sets": {f"a{i}": outcome for i, outcome in enumerate(outcomes)}}


def failed(cls="ProgramFailed", message="xtb: exited with code 127", tail="libx.so missing"):
    return {"status": "failed", "error": {"class": cls, "message": message, "output_tail": tail}}


OK = {"status": "ok", "error": None}


def test_the_third_identical_failure_on_different_records_is_the_workers_fault():
    streak = faults.FailureStreak(3)
    assert streak.observe(doc("r1", failed())) is None
    assert streak.observe(doc("r1", failed())) is None  # the same record again does not count
    assert streak.observe(doc("r2", failed())) is None
    fault = streak.observe(doc("r3", failed()))
    assert fault == {"class": "RepeatedFailure", "fault": "worker",
                     "output_tail": "libx.so missing",
                     "message": "xtb: exited with code 127, with the same output, on 3 different "
                                "records in a row (r1, r2, r3)"}


def test_a_success_ends_the_streak_and_input_errors_leave_it_alone():
    streak = faults.FailureStreak(3)
    streak.observe(doc("r1", failed()))
    streak.observe(doc("r2", failed()))
    assert streak.observe(doc("r3", OK)) is None
    assert streak.observe(doc("r4", failed())) is None
    assert streak.observe(doc("r5", failed())) is None
    for record in ("r6", "r7", "r8", "r9"):
        assert streak.observe(doc(record, failed("InputError", "no geometry", ""))) is None
    assert streak.observe(doc("r10", failed()))["fault"] == "worker"


def test_failures_with_different_output_are_the_records_own():
    streak = faults.FailureStreak(3)
    for i in range(10):
        assert streak.observe(doc(f"r{i}", failed(message="xtb: exited with code 1",
                                                  tail=f"SCF not converged, E={i}"))) is None


def test_a_scratch_root_that_cannot_be_used_is_an_arg_set_error_with_fault(tmp_path, monkeypatch):
    root = tmp_path / "scratch"
    root.write_text("a file\n")
    monkeypatch.setenv("HTPORTAL_SCRATCH_DIR", str(root))
    spec = {"function": "xtb.run", "arg_sets": [
        {"name": "first", "parameters": {}}, {"name": "second", "parameters": {}}]}

    document = execute(function="xtb.run", record={"id": "w", "input": {
        "elements": ["H", "H"], "coordinates": [[0, 0, 0], [0, 0, 0.74]]}}, spec=spec)

    assert list(document["arg_sets"]) == ["first"]  # the second would fail the same way
    assert document["arg_sets"]["first"]["error"] == {
        "class": "ScratchUnwritable", "fault": "worker", "output_tail": "",
        "message": f"cannot make a scratch directory in {root}: Not a directory"}
    assert faults.worker_fault(document)["class"] == "ScratchUnwritable"


def test_a_full_disk_while_writing_is_the_workers_fault(monkeypatch):
    from workers.runtime.tasks import basic

    def write_input(*, record, arg_set, ctx):
        with open("/dev/full", "w") as fh:  # a real ENOSPC from the kernel
            fh.write("input\n")

    monkeypatch.setattr(basic, "noop", write_input)
    spec = {"function": "noop", "arg_sets": [{"name": "a", "parameters": {}}]}

    error = execute(function="noop", record={"id": "r"}, spec=spec)["arg_sets"]["a"]["error"]

    # A write error found at flush or close names no file; no scratch directory was made.
    assert error == {"class": "ScratchUnwritable", "fault": "worker", "output_tail": "",
                     "message": "cannot write in the scratch directory: No space left on "
                                "device"}


def test_a_bad_repeated_failures_setting_is_refused():
    import pytest

    from workers.runtime import config

    with pytest.raises(config.ConfigError, match="^HTPORTAL_REPEATED_FAILURES='0' must be "
                                                 "greater than 0$"):
        config.load({"HTPORTAL_REPEATED_FAILURES": "0"})
    assert config.load({"HTPORTAL_REPEATED_FAILURES": "5"}).repeated_failures == 5
