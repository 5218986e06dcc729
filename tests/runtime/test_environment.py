"""Programs run in a clean room: no worker credentials in their environment, HOME and TMPDIR in
the scratch directory, which is also their working directory; the worker forgets the Redis URL
and cannot be read through /proc by what it starts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.runtime import config, environment
from workers.runtime.programs import run_program

ROOT = Path(__file__).resolve().parents[2]
URL = "redis://:pw-9f3e1c@10.1.2.3:6390/0"
SECRETS = ("pw-9f3e1c", "10.1.2.3:6390", "redis://")

DUMP = """#!/bin/sh
env > "$1"
pwd > "$2"
"""


def dump_script(directory: Path) -> Path:
    script = directory / "dump-env"
    script.write_text(DUMP)
    script.chmod(0o755)
    return script


def parse_env(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture
def worker_like_env(monkeypatch, tmp_path):
    """The environment a worker on a grid node has: its Redis URL and other people's secrets."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dump_script(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("HTPORTAL_REDIS_URL", URL)
    monkeypatch.setenv("REDIS_URL", URL)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-pw-9f3e1c")
    monkeypatch.setenv("SOME_OTHER", "from the worker")
    monkeypatch.setenv("XTBPATH", "/opt/xtb/share")
    monkeypatch.setenv("HT_SITE_LICENSE", "site-17")
    monkeypatch.setenv("HTPORTAL_PROGRAM_ENV", "HT_SITE_LICENSE")
    return tmp_path


def test_a_program_sees_no_credentials_and_runs_in_its_scratch_directory(worker_like_env):
    scratch = worker_like_env / "scratch"
    scratch.mkdir()
    out, cwd = worker_like_env / "env.txt", worker_like_env / "cwd.txt"

    run_program(["dump-env", str(out), str(cwd)], workdir=scratch, env={"OMP_NUM_THREADS": "4"})

    text = out.read_text()
    for secret in SECRETS + ("aws-pw",):
        assert secret not in text
    env = parse_env(text)
    assert "HTPORTAL_REDIS_URL" not in env and "REDIS_URL" not in env
    assert "SOME_OTHER" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert cwd.read_text().strip() == str(scratch)
    assert (env["HOME"], env["TMPDIR"]) == (str(scratch), str(scratch))
    assert (env["LANG"], env["LC_ALL"]) == ("C", "C")
    assert env["PATH"] == os.environ["PATH"]
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["OPENBLAS_NUM_THREADS"]) == \
        ("4", "1", "1")
    assert (env["XTBPATH"], env["HT_SITE_LICENSE"]) == ("/opt/xtb/share", "site-17")


def test_credential_like_names_and_redis_urls_never_pass_even_when_allowlisted():
    source = {"PATH": "/usr/bin", "HTPORTAL_PROGRAM_ENV": "REDIS_HOST,MY_TOKEN,DB_PASSWORD,"
              "API_KEY,SITE_URL,SITE_NAME", "REDIS_HOST": "10.1.2.3", "MY_TOKEN": "t",
              "DB_PASSWORD": "p", "API_KEY": "k", "SITE_URL": URL, "SITE_NAME": "osg"}
    env = environment.program_environment(workdir="/scratch/x", source=source,
                                          extra={"SECRET_THING": "s"})
    assert env == {"PATH": "/usr/bin", "HOME": "/scratch/x", "TMPDIR": "/scratch/x",
                   "LANG": "C", "LC_ALL": "C", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "OPENBLAS_NUM_THREADS": "1", "SITE_NAME": "osg"}


def test_program_path_and_orcas_own_directory():
    source = {"PATH": "/usr/bin:/bin", "HTPORTAL_PROGRAM_PATH": "/opt/bin:/usr/bin",
              "LD_LIBRARY_PATH": "/opt/openmpi/lib"}
    orca = environment.program_environment(workdir="/s", program="/opt/orca/orca",
                                           source=source)
    assert orca["PATH"] == "/opt/orca:/opt/bin:/usr/bin"
    assert orca["LD_LIBRARY_PATH"] == "/opt/orca:/opt/openmpi/lib"
    xtb = environment.program_environment(workdir="/s", program="/usr/bin/xtb", source=source)
    assert (xtb["PATH"], xtb["LD_LIBRARY_PATH"]) == ("/opt/bin:/usr/bin", "/opt/openmpi/lib")


@pytest.mark.parametrize("value, message", [
    ("XTBPATH,REDIS_URL", "HTPORTAL_PROGRAM_ENV: 'REDIS_URL' may hold a credential and is never "
     "passed to programs (names containing REDIS, PASSWORD, PASSWD, SECRET, TOKEN, KEY or "
     "CREDENTIAL)"),
    ("aws_secret_access_key", "HTPORTAL_PROGRAM_ENV: 'aws_secret_access_key' may hold a "
     "credential and is never passed to programs (names containing REDIS, PASSWORD, PASSWD, "
     "SECRET, TOKEN, KEY or CREDENTIAL)"),
    ("XTBPATH,2BAD", "HTPORTAL_PROGRAM_ENV: '2BAD' is not a variable name (letters, digits and "
     "_, comma-separated)"),
])
def test_config_refuses_a_credential_like_or_bad_name_in_the_allowlist(value, message):
    with pytest.raises(config.ConfigError) as raised:
        config.load({"HTPORTAL_PROGRAM_ENV": value})
    assert str(raised.value) == message


def test_config_reads_the_allowlist():
    assert config.load({"HTPORTAL_PROGRAM_ENV": " XTBPATH , OPAL_PREFIX,"}).program_env == \
        ("XTBPATH", "OPAL_PREFIX")


FORGET = """
import os, sys
from workers.runtime import environment
environment.forget(["HTPORTAL_REDIS_URL", "REDIS_URL"])
proc = open("/proc/self/environ", "rb").read()
child = os.popen("env").read()
print(repr((proc, child, "HTPORTAL_REDIS_URL" in os.environ)))
"""


def test_forgetting_the_url_wipes_it_from_proc_environ_and_from_children():
    env = {**os.environ, "HTPORTAL_REDIS_URL": URL, "REDIS_URL": URL}
    done = subprocess.run([sys.executable, "-c", FORGET], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    proc, child, still_there = eval(done.stdout)
    assert not still_there
    assert b"pw-9f3e1c" not in proc and b"HTPORTAL_REDIS_URL=" not in proc
    assert "pw-9f3e1c" not in child and "REDIS_URL" not in child
    assert b"PATH=" in proc  # the rest of the environment is untouched


PEEK = """
import subprocess, sys
from workers.runtime import environment
if sys.argv[1] == "protect":
    assert environment.protect_process()
done = subprocess.run(["sh", "-c", "cat /proc/$PPID/environ"], capture_output=True)
print(done.returncode, b"pw-9f3e1c" in done.stdout)
"""


def as_nobody():
    """Run the child as nobody when the tests run as root (root may read any process)."""
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)


@pytest.mark.parametrize("mode, expected", [("protect", "1 False"), ("plain", "0 True")])
def test_a_protected_process_cannot_be_read_by_a_program_it_starts(mode, expected):
    # /usr/bin/python3: the venv's python lives where nobody may not read it.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SEEN": "pw-9f3e1c"}
    done = subprocess.run(["/usr/bin/python3", "-c", PEEK, mode], cwd="/", env=env,
                          capture_output=True, text=True, preexec_fn=as_nobody, timeout=30)
    assert done.stdout.strip() == expected, done.stderr
