"""execute.execute: the arg-set loop, scratch directories, parsers, the result document."""
from __future__ import annotations

import logging
import tempfile
import time

import pytest

from workers.runtime import errors, registry
from workers.runtime.execute import Control, Parameters, TaskContext, execute
from workers.runtime.scratch import scratch_dir
from tests.standins.records import WATER, record

NOOP = {"name": "a", "parameters": {}, "parsers": {}, "keep_files": {}}


@pytest.fixture(autouse=True)
def tmpdir_is_tmp_path(tmp_path, monkeypatch):
    """TMPDIR for the scratch directories: a fresh, empty folder per test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("HTPORTAL_KEEP_SCRATCH", raising=False)
    return tmp_path


def _sleep(name, seconds):
    return {"name": name, "parameters": {"seconds": seconds}, "parsers": {}, "keep_files": {}}


def test_it_makes_the_result_document():
    spec = {"job_timeout": 60, "arg_sets": [NOOP, dict(NOOP, name="b")]}
    doc = execute(function="noop", record=record("mol-0001"), spec=spec)

    assert list(doc) == ["record_id", "function", "host", "status", "started_at", "finished_at",
                         "arg_sets", "files"]
    assert (doc["record_id"], doc["function"], doc["status"]) == ("mol-0001", "noop", "ok")
    assert list(doc["arg_sets"]) == ["a", "b"]
    outcome = doc["arg_sets"]["a"]
    assert outcome == {"status": "ok", "values": {}, "error": None, "wall_s": outcome["wall_s"],
                       "cpu_s": 0, "exit_code": None, "host": doc["host"]}
    assert doc["started_at"].endswith("+00:00") and doc["files"] == []


def test_an_unknown_function_is_refused():
    with pytest.raises(registry.UnknownNameError, match="unknown function 'orca.seqential'"):
        execute(function="orca.seqential", record=record("m"), spec={"arg_sets": [NOOP]})


def test_a_failed_arg_set_leaves_the_others_running():
    spec = {"arg_sets": [_sleep("bad", "long"), _sleep("good", 0)]}
    doc = execute(function="sleep", record=record("m"), spec=spec)

    assert doc["status"] == "failed"
    assert doc["arg_sets"]["good"]["status"] == "ok"
    bad = doc["arg_sets"]["bad"]
    assert bad["status"] == "failed" and bad["values"] == {}
    assert bad["error"] == {"class": "InputError", "output_tail": "",
                            "message": "arg set 'bad': parameters.seconds must be a number >= 0, "
                                       "not 'long'"}


def test_a_stop_request_propagates_as_interrupted_and_removes_the_scratch(tmp_path):
    asked = time.monotonic() + 0.3
    control = Control(should_stop=lambda: time.monotonic() > asked)
    with pytest.raises(errors.Interrupted):
        execute(function="sleep", record=record("m"), spec={"arg_sets": [_sleep("s", 30)]},
                control=control)
    assert time.monotonic() - asked < 1.0
    assert list(tmp_path.iterdir()) == []


def test_the_job_timeout_fails_the_arg_set_that_runs_past_it():
    spec = {"job_timeout": 0.5, "arg_sets": [_sleep("s", 30), _sleep("after", 0)]}
    started = time.monotonic()
    doc = execute(function="sleep", record=record("m"), spec=spec)

    assert time.monotonic() - started < 1.5
    assert doc["arg_sets"]["s"]["error"]["class"] == "ProgramTimeout"
    assert doc["arg_sets"]["after"]["status"] == "ok"


def test_the_heartbeat_is_called_while_a_task_sleeps():
    beats = []
    control = Control(heartbeat=lambda: beats.append(1), heartbeat_interval=0.1)
    execute(function="sleep", record=record("m"), spec={"arg_sets": [_sleep("s", 0.55)]},
            control=control)
    assert 4 <= len(beats) <= 6


def test_each_arg_set_gets_a_scratch_directory_named_after_the_record(tmp_path):
    with scratch_dir(record_id="../mol 1/x", arg_set="gfn2") as scratch:
        path = scratch.path
        assert path.parent == tmp_path
        assert path.name.startswith("htportal-_mol_1_x-gfn2-")
        (path / "stdout").write_text("x")
    assert not path.exists()


def test_keep_scratch_keeps_it_and_says_where(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HTPORTAL_KEEP_SCRATCH", "1")
    caplog.set_level(logging.INFO, logger="workers.runtime.scratch")
    with scratch_dir(record_id="mol-7", arg_set="a") as scratch:
        (scratch.path / "stdout").write_text("x")

    [kept] = tmp_path.iterdir()
    assert kept.name.startswith("htportal-mol-7-a-")
    assert f"record mol-7, arg set a: scratch directory kept: {kept}" in caplog.messages


def test_a_task_that_needs_no_directory_makes_none(tmp_path):
    document = execute(function="noop", record=record("mol-8"), spec={"arg_sets": [NOOP]})

    assert document["status"] == "ok"
    assert list(tmp_path.iterdir()) == []


def test_a_parser_on_a_missing_file_fails_the_arg_set():
    arg_set = {"name": "sp", "parameters": {"task": "sp"},
               "parsers": {"gradient": ["xtb.gradient"]}, "keep_files": {"stdout": "{id}.out"}}
    doc = execute(function="xtb.run", record=WATER, spec={"arg_sets": [arg_set]})

    error = doc["arg_sets"]["sp"]["error"]
    assert (error["class"], error["message"]) == (
        "ParseError", "no file 'gradient' in the scratch directory")
    assert "normal termination of xtb" in error["output_tail"]
    assert doc["arg_sets"]["sp"]["exit_code"] == 0
    [kept] = doc["files"]  # the failed arg set's output still goes back
    assert kept["name"] == "water.out" and "data" in kept


@pytest.mark.parametrize("change, message", [
    ({"keep_files": {"stdout": "{name}.out"}},
     "arg set 'a': kept file name '{name}.out' may use only the placeholder {id}"),
    ({"keep_files": {"../orca.gbw": "{id}.gbw"}},
     "arg set 'a': file '../orca.gbw' must be a path inside the scratch directory "
     "(no leading '/', no '..')"),
    ({"parsers": {"stdout": "orca.total_energy"}},
     "arg set 'a': parsers of 'stdout' must be a list of names"),
    ({"parameters": [1]}, "arg set 'a': 'parameters' must be an object"),
])
def test_a_malformed_arg_set_fails_before_it_runs(change, message):
    doc = execute(function="noop", record=record("m"), spec={"arg_sets": [dict(NOOP, **change)]})
    assert doc["arg_sets"]["a"]["error"] == {"class": "InputError", "message": message,
                                             "output_tail": ""}


def test_an_unknown_parser_fails_the_arg_set_naming_it():
    arg_set = dict(NOOP, parsers={"stdout": ["orca.totl_energy"]})
    doc = execute(function="noop", record=record("m"), spec={"arg_sets": [arg_set]})
    message = doc["arg_sets"]["a"]["error"]["message"]
    assert message.startswith("arg set 'a': unknown parser 'orca.totl_energy' (known: orca.")


def test_a_bad_job_timeout_is_refused():
    with pytest.raises(errors.InputError, match=r"^job_timeout must be a positive number of "
                                                r"seconds \(got '600'\)$"):
        execute(function="noop", record=record("m"), spec={"job_timeout": "600", "arg_sets": []})


@pytest.mark.parametrize("change, message", [
    ({"elements": None}, "record 'water': input has no 'elements' list"),
    ({"coordinates": []}, "record 'water': input has no 'coordinates' list"),
    ({"elements": ["O", "H"]}, "record 'water': 2 elements but 3 coordinates"),
    ({"elements": ["O", "Hx", "H"]}, "record 'water': unknown element symbol 'Hx' (atom 2)"),
    ({"coordinates": [[0, 0, 0], [0, "0.9", 0], [1, 0, 0]]},
     "record 'water': coordinates of atom 2 are not 3 numbers (got [0, '0.9', 0])"),
    ({"coordinates": [[0, 0, 0], [0, 0.9], [1, 0, 0]]},
     "record 'water': coordinates of atom 2 are not 3 numbers (got [0, 0.9])"),
    ({"charge": 0.5}, "record 'water': charge must be a whole number (got 0.5)"),
    ({"multiplicity": 0}, "record 'water': multiplicity must be at least 1 (got 0)"),
    ({"multiplicity": 2},
     "record 'water': multiplicity 2 (1 unpaired) is impossible with 10 electrons (charge 0)"),
    ({"charge": 1}, "record 'water': multiplicity 1 (0 unpaired) is impossible with 9 electrons "
                    "(charge 1)"),
])
def test_bad_record_input_gives_the_exact_input_error(change, message):
    bad = {"id": "water", "input": dict(WATER["input"], **change)}
    arg_set = {"name": "gfn2", "parameters": {"task": "sp"}, "parsers": {}, "keep_files": {}}
    doc = execute(function="xtb.run", record=bad, spec={"arg_sets": [arg_set]})
    assert doc["arg_sets"]["gfn2"]["error"] == {"class": "InputError", "message": message,
                                                "output_tail": ""}


def test_parameters_name_the_arg_set_and_the_field():
    params = Parameters({"name": "dock", "parameters": {"center": [1, 2], "cpu": 1.5}})
    with pytest.raises(errors.InputError) as caught:
        params.numbers("center", 3)
    assert str(caught.value) == ("arg set 'dock': parameter 'center' must be a list of 3 numbers "
                                 "(got [1, 2])")
    with pytest.raises(errors.InputError) as caught:
        params.integer("cpu", default=1, minimum=1)
    assert str(caught.value) == ("arg set 'dock': parameter 'cpu' must be a whole number of at "
                                 "least 1 (got 1.5)")
    with pytest.raises(errors.InputError) as caught:
        params.mapping("receptor")
    assert str(caught.value) == "arg set 'dock': parameters have no 'receptor'"


def test_the_context_runs_programs_in_the_scratch_directory(tmp_path):
    ctx = TaskContext(workdir=tmp_path, control=Control(), deadline=None)
    result = ctx.run_program(["sh", "-c", "pwd"])
    assert (tmp_path / "stdout").read_text().strip() == str(tmp_path)
    assert ctx.results == [result]
    with pytest.raises(errors.ProgramFailed):
        ctx.run_program(["false"])
    assert [r.exit_code for r in ctx.results] == [0, 1]


def test_a_stop_request_between_arg_sets_gives_the_task_back():
    calls = []
    control = Control(should_stop=lambda: calls.append(1) or len(calls) > 1)
    with pytest.raises(errors.Interrupted, match="record m: stopped on a stop request"):
        execute(function="noop", record=record("m"),
                spec={"arg_sets": [NOOP, dict(NOOP, name="b")]}, control=control)
    assert len(calls) == 2
