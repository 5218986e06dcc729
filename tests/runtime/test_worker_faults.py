"""Broken nodes do not eat the campaign: real worker processes on a node without xtb, with a
scratch root that cannot be written, or whose xtb fails the same way on every record, send one
envelope with `"fault": "worker"` and leave with exit code 3; the jobs behind stay queued. Also:
what a worker registers about itself, and that a real task's program sees no credential."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from redis import Redis
from rq.job import JobStatus

from tests.runtime.test_worker import (  # noqa: F401  (start_worker, password_redis: fixtures)
    json_queue, password_redis, replies, start_worker, wait_until)
from tests.standins.records import WATER
from workers.runtime import registry

XTB_SPEC = {"function": "xtb.run", "job_timeout": 120, "arg_sets": [
    {"name": "gfn2", "parameters": {"method": "gfn2", "task": "sp"},
     "parsers": {"stdout": ["xtb.energy"]}}]}
BROKEN_LINE = "ERROR worker w1: environment broken ({}); leaving"
NO_XTB = "xtb: program not found (set XTB_EXE or PATH)"


def water(record_id: str) -> dict:
    return dict(WATER, id=record_id)


def enqueue_xtb(conn: Redis, count: int, record=water) -> list:
    queue = json_queue(conn, "xtb")
    return [queue.enqueue("xtb.run", record=record(f"mol-{i}"), spec=XTB_SPEC,
                          reply_to="replies", attempt=f"{i}.sig") for i in range(count)]


@pytest.fixture
def no_xtb_env(tmp_path) -> dict:
    """PATH without xtb (sh and the coreutils only), XTB_EXE unset."""
    bin_dir = tmp_path / "empty-bin"
    bin_dir.mkdir()
    return {"PATH": str(bin_dir), "XTB_EXE": ""}


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_without_xtb_it_sends_one_fault_envelope_and_leaves(redis_conn, redis_server,
                                                            start_worker, no_xtb_env):
    jobs = enqueue_xtb(redis_conn, 4)
    started = time.monotonic()

    worker = start_worker("--redis-url", redis_server.url, "xtb", env=no_xtb_env)

    assert worker.wait(20) == 3, worker.log
    assert time.monotonic() - started < 15
    assert replies(redis_conn) == [{
        "job_id": jobs[0].id, "worker": "w1", "attempt": "0.sig",
        "error": {"class": "ProgramNotFound", "message": NO_XTB, "fault": "worker"}}]
    assert json_queue(redis_conn, "xtb").job_ids == [job.id for job in jobs[1:]]
    assert all(job.get_status(refresh=True) == JobStatus.QUEUED for job in jobs[1:])
    assert BROKEN_LINE.format(NO_XTB) in worker.log
    assert worker.log.count("environment broken") == 1
    assert "Traceback" not in worker.log


def test_with_needs_xtb_and_no_xtb_it_leaves_before_taking_a_job(redis_conn, redis_server,
                                                                start_worker, no_xtb_env):
    jobs = enqueue_xtb(redis_conn, 2)

    worker = start_worker("--redis-url", redis_server.url, "--needs", "xtb.run,vina", "xtb",
                          env=no_xtb_env)

    assert worker.wait(20) == 3, worker.log
    assert worker.log.strip().splitlines()[-1].endswith(BROKEN_LINE.format(NO_XTB))
    assert replies(redis_conn) == []
    assert json_queue(redis_conn, "xtb").job_ids == [job.id for job in jobs]
    assert redis_conn.keys("rq:worker:*") == []


def test_a_needed_program_that_cannot_run_here_makes_it_leave_at_start(
        redis_conn, redis_server, start_worker, tmp_path):
    fake = script(tmp_path / "xtb", "#!/bin/sh\n"
                  "echo 'xtb: error while loading shared libraries: libgfortran.so.5' >&2\n"
                  "exit 127\n")
    jobs = enqueue_xtb(redis_conn, 2)

    worker = start_worker("--redis-url", redis_server.url, "--needs", "xtb", "xtb",
                          env={"XTB_EXE": str(fake)})

    assert worker.wait(20) == 3, worker.log
    reason = (f"xtb: {fake} cannot run here (exit code 127: xtb: error while loading shared "
              "libraries: libgfortran.so.5)")
    assert BROKEN_LINE.format(reason) in worker.log
    assert json_queue(redis_conn, "xtb").job_ids == [job.id for job in jobs]


def test_an_unknown_need_is_a_bad_option(redis_server, start_worker):
    worker = start_worker("--redis-url", redis_server.url, "--needs", "gaussian", "xtb")
    assert worker.wait(20) == 2
    assert ("'gaussian' is not a program or task name (programs: orca, xtb, vina, obabel; "
            f"tasks: {', '.join(registry.task_names())})") in worker.log


def test_a_scratch_root_that_is_a_file_makes_it_leave_at_start(redis_conn, redis_server,
                                                              start_worker, tmp_path):
    jobs = enqueue_xtb(redis_conn, 2)
    root = tmp_path / "scratch"
    root.write_text("a regular file, not a directory\n")

    worker = start_worker("--redis-url", redis_server.url, "xtb",
                          env={"HTPORTAL_SCRATCH_DIR": str(root)})

    assert worker.wait(20) == 3, worker.log
    reason = f"cannot make a scratch directory in {root}: Not a directory"
    assert BROKEN_LINE.format(reason) in worker.log
    assert replies(redis_conn) == []
    assert json_queue(redis_conn, "xtb").job_ids == [job.id for job in jobs]


def test_a_scratch_root_lost_while_running_gives_one_fault_envelope(redis_conn, redis_server,
                                                                    start_worker, tmp_path):
    root = tmp_path / "scratch"
    root.mkdir()
    worker = start_worker("--redis-url", redis_server.url, "xtb",
                          env={"HTPORTAL_SCRATCH_DIR": str(root)})
    wait_until(lambda: "Listening on" in worker.log, what="the worker to listen")
    root.rmdir()  # a full or vanished disk, seen only once the worker runs
    root.write_text("now a regular file\n")

    jobs = enqueue_xtb(redis_conn, 3)

    assert worker.wait(20) == 3, worker.log
    reason = f"cannot make a scratch directory in {root}: Not a directory"
    assert replies(redis_conn) == [{
        "job_id": jobs[0].id, "worker": "w1", "attempt": "0.sig",
        "error": {"class": "ScratchUnwritable", "message": reason, "fault": "worker"}}]
    assert json_queue(redis_conn, "xtb").job_ids == [job.id for job in jobs[1:]]
    assert BROKEN_LINE.format(reason) in worker.log


def test_the_same_program_failure_on_three_records_makes_it_leave(redis_conn, redis_server,
                                                                  start_worker, tmp_path):
    fake = script(tmp_path / "xtb", "#!/bin/sh\n"
                  "echo 'xtb: error while loading shared libraries: libgfortran.so.5: cannot "
                  "open shared object file: No such file or directory' >&2\nexit 127\n")
    jobs = enqueue_xtb(redis_conn, 5)

    worker = start_worker("--redis-url", redis_server.url, "xtb", env={"XTB_EXE": str(fake)})

    assert worker.wait(30) == 3, worker.log
    sent = replies(redis_conn)
    assert [r["job_id"] for r in sent] == [job.id for job in jobs[:3]]
    for reply in sent[:2]:  # the first two look like the records' own failures
        error = reply["result"]["arg_sets"]["gfn2"]["error"]
        assert (error["class"], error["message"]) == ("ProgramFailed", "xtb: exited with code 127")
        assert "fault" not in error
    message = ("xtb: exited with code 127, with the same output, on 3 different records in a "
               "row (mol-0, mol-1, mol-2)")
    assert sent[2]["error"] == {"class": "RepeatedFailure", "message": message,
                                "fault": "worker"}
    assert BROKEN_LINE.format(message) in worker.log
    assert json_queue(redis_conn, "xtb").job_ids == [job.id for job in jobs[3:]]


def test_input_errors_on_many_records_do_not_make_it_leave(redis_conn, redis_server,
                                                          start_worker):
    jobs = enqueue_xtb(redis_conn, 6, record=lambda record_id: {"id": record_id, "input": {}})

    worker = start_worker("--redis-url", redis_server.url, "--max-tasks", "6", "xtb")

    assert worker.wait(60) == 0, worker.log
    sent = replies(redis_conn)
    assert [r["job_id"] for r in sent] == [job.id for job in jobs]
    assert {r["result"]["arg_sets"]["gfn2"]["error"]["class"] for r in sent} == {"InputError"}
    assert "environment broken" not in worker.log


def test_it_registers_what_it_can_run(redis_conn, redis_server, start_worker):
    worker = start_worker("--redis-url", redis_server.url, "--needs", "xtb,vina.dock", "xtb",
                          env={"ORCA_EXE": ""}, name="caps")
    wait_until(lambda: redis_conn.hget("rq:worker:caps", "htportal_caps"), what="capabilities")

    caps = json.loads(redis_conn.hget("rq:worker:caps", "htportal_caps"))
    assert caps["needs"] == ["xtb", "vina"]
    programs = caps["programs"]
    assert programs["xtb"]["version"].startswith("xtb version 6.5.1")
    assert programs["vina"]["version"] == "AutoDock Vina v1.2.3"
    assert programs["obabel"]["version"] is None  # not needed: found, not started
    assert os.path.isabs(programs["obabel"]["path"])
    assert programs["orca"] == {"error": "orca: program not found (set ORCA_EXE or PATH)"}
    assert os.path.isabs(programs["xtb"]["path"])
    worker.stop()


def test_a_real_tasks_program_sees_no_credential_and_runs_in_its_scratch_dir(
        password_redis, start_worker, tmp_path):
    conn = Redis.from_url(password_redis.url)
    conn.flushdb()
    dump, cwd, parent = tmp_path / "env.txt", tmp_path / "cwd.txt", tmp_path / "parent.txt"
    # xtb itself runs, so the task succeeds; first the wrapper records what it was given.
    wrapper = script(tmp_path / "xtb-wrapper", f"#!/bin/sh\nenv > {dump}\npwd > {cwd}\n"
                     f"cat /proc/$PPID/environ > {parent} 2>&1\nexec xtb \"$@\"\n")
    root = tmp_path / "scratch"
    root.mkdir()
    job = enqueue_xtb(conn, 1)[0]

    worker = start_worker("--max-tasks", "1", "xtb", env={
        "HTPORTAL_REDIS_URL": password_redis.url, "REDIS_URL": password_redis.url,
        "XTB_EXE": str(wrapper), "HTPORTAL_SCRATCH_DIR": str(root)})

    assert worker.wait(60) == 0, worker.log
    assert job.return_value(refresh=True)["status"] == "ok"
    seen = dump.read_text() + parent.read_text()
    host_port = f"127.0.0.1:{password_redis.port}"
    for secret in ("s3cret-pw", password_redis.url, host_port, "REDIS_URL"):
        assert secret not in seen
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    workdir = cwd.read_text().strip()
    assert Path(workdir).parent == root and Path(workdir).name.startswith("htportal-mol-0-gfn2-")
    assert (env["HOME"], env["TMPDIR"]) == (workdir, workdir)
    conn.close()
