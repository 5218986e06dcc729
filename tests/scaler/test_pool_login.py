"""`manage.py pool_login` and the scaler's session Remote, against a real OpenSSH sshd that asks a
password and a real TOTP code through keyboard-interactive/PAM (tests/scaler/servers.py,
start_mfa_sshd), as OSPool's second-factor access points do. The session is a real OpenSSH
ControlMaster; killing it is a real SIGKILL."""
from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import time
import traceback
from io import StringIO
from pathlib import Path

import pytest
from django.core import serializers
from django.core.management import call_command
from django.db import connections
from django.core.management.base import CommandError
from rq import Queue
from rq.serializers import JSONSerializer

from tests.scaler import servers
from workers.management.commands import pool_login as pool_login_command
from workers.models import ScalerEvent, WorkerPool
from workers.scaler.adapters import remote_open
from workers.scaler.base import AuthenticationFailed, HostKeyError
from workers.scaler.loop import ScaleLoop
from workers.scaler.sessions import (LoginFailed, SessionGone, SessionPaths, SessionRemote,
                                     pool_login, pool_login_status, pool_logout)
from workers.scaler.ssh import SshRemote, SshTarget

NOOP_SPEC = {"function": "noop", "arg_sets": [{"name": "a", "parameters": {}}]}


@pytest.fixture(scope="module")
def mfa():
    server = servers.start_mfa_sshd()
    yield server
    server.stop()


@pytest.fixture
def session_dir(settings):
    # Short on purpose: a unix socket path has ~90 usable characters (tmp_path is too deep).
    directory = Path(tempfile.mkdtemp(prefix="hts-"))
    settings.SSH_SESSION_DIR = directory / "ssh"
    settings.SSH_SESSION_POOLS = ["osg"]
    yield settings.SSH_SESSION_DIR
    for socket in directory.glob("ssh/*.sock"):  # a master left by a failing test
        subprocess.run(["ssh", "-F", "/dev/null", "-S", str(socket), "-O", "exit", "x"],
                       capture_output=True, timeout=10)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def osg(db, mfa, session_dir, monkeypatch):
    # No agent, no key: whatever reaches the host goes through the session.
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return WorkerPool.objects.create(name="osg", kind="condor", host=mfa.host, port=mfa.port,
                                     user=mfa.user, host_key=mfa.host_key_line, key_path="")


class Person:
    """Answers the host's prompts as a person at the terminal would, and remembers them."""

    def __init__(self, mfa, *, code: str = ""):
        self.mfa = mfa
        self.prompts, self.answers = [], []
        self.code = code

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        answer = self.mfa.password if "Password:" in prompt else (self.code or self.mfa.code())
        self.answers.append(answer)
        return answer


def master_pid(pool) -> int:
    paths = SessionPaths.of(pool)
    result = subprocess.run(["ssh", "-F", "/dev/null", "-S", str(paths.socket), "-O", "check",
                             "x"], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return int(result.stderr.split("pid=")[1].split(")")[0])


def kill_master(pool) -> None:
    """The session drops as it does when the access point or the network ends it."""
    pid = master_pid(pool)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def ssh_processes_of(pool) -> list:
    socket = str(SessionPaths.of(pool).socket).encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"ssh" and socket in argv:
            found.append(int(proc.name))
    return found


def gone_message(pool) -> str:
    return (f"pool osg: the SSH session has gone (ControlMaster socket "
            f"{SessionPaths.of(pool).socket} not answering); run manage.py pool_login osg")


def accepted_logins(mfa) -> int:
    return mfa.log().count("Accepted keyboard-interactive/pam")


def test_it_opens_a_session_by_answering_the_prompts_and_commands_run_through_it(osg, mfa):
    person = Person(mfa)
    logins = accepted_logins(mfa)
    line = pool_login(pool=osg, answer=person)
    who = f"({mfa.user}@127.0.0.1)"
    assert person.prompts == [f"{who} Password: ",
                              f"{who} One-time password (OATH) for `{mfa.user}': "]
    socket = SessionPaths.of(osg).socket
    assert line.startswith(f"pool osg: SSH session open to {mfa.user}@127.0.0.1:{mfa.port} "
                           f"(ControlMaster socket {socket}, master pid {master_pid(osg)}, "
                           f"opened ")
    assert pool_login_status(osg) is None

    remote = remote_open(pool=osg)
    assert isinstance(remote, SessionRemote)
    result = remote.run("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert remote.run("cat", stdin="from stdin").stdout == "from stdin"
    assert remote.run('echo "$A"', env={"A": "x y"}).stdout == "x y\n"
    target = SessionPaths.of(osg).directory.parent / "put" / "env"
    remote.run(f"mkdir -p {target.parent}")
    assert remote.sha256(str(target)) is None
    remote.put(str(target), b"SECRET=1\n", mode=0o600)
    assert (target.read_bytes(), oct(target.stat().st_mode & 0o777)) == (b"SECRET=1\n", "0o600")
    assert remote.sha256(str(target)) == hashlib.sha256(b"SECRET=1\n").hexdigest()
    assert sorted(os.listdir(target.parent)) == ["env"]
    # One login, by the person; every command since rode on it.
    assert accepted_logins(mfa) == logins + 1
    # Logging in again while the session answers asks nothing.
    again = Person(mfa)
    assert pool_login(pool=osg, answer=again).startswith("pool osg: SSH session open")
    assert again.prompts == []


def test_the_scalers_own_key_login_is_refused_by_such_a_host(mfa, tmp_path):
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)],
                   check=True)
    remote = SshRemote(SshTarget(mfa.host, mfa.port, mfa.user, mfa.host_key_line, str(key)))
    with pytest.raises(AuthenticationFailed, match="the host refused the key"):
        remote.run("true")


def test_a_killed_session_makes_the_scaler_say_a_login_is_needed(
        osg, mfa, redis_conn, redis_server, settings, caplog, capsys):
    settings.REDIS_URL = redis_server.url
    pool_login(pool=osg, answer=Person(mfa))
    remote = remote_open(pool=osg)
    assert remote.run("true").exit_code == 0
    logins = accepted_logins(mfa)

    kill_master(osg)
    expected = gone_message(osg)
    assert pool_login_status(osg) == expected
    with pytest.raises(SessionGone) as caught:
        remote.run("true")
    assert str(caught.value) == expected
    assert accepted_logins(mfa) == logins  # no connection of its own, not even an attempt

    ScaleLoop(connection=redis_conn, pool_name="osg").step()
    event = ScalerEvent.objects.get(pool=osg)
    assert (event.kind, event.message, event.details["error"]) == ("error", expected,
                                                                   "SessionGone")
    assert expected in caplog.text
    with pytest.raises(CommandError) as status:
        call_command("pool_login", "osg", "--status")
    assert str(status.value) == expected
    err = StringIO()
    call_command("scale", "--once", "--pool", "osg", stderr=err, stdout=StringIO())
    assert expected in err.getvalue().splitlines()

    # Logging in again clears the backoff: the next step tries the pool at once.
    osg.refresh_from_db()
    assert osg.next_try_at is not None
    pool_login(pool=osg, answer=Person(mfa))
    osg.refresh_from_db()
    assert (osg.next_try_at, pool_login_status(osg)) == (None, None)


def test_no_session_yet_is_said_so(osg):
    assert pool_login_status(osg) == (
        f"pool osg: no SSH session yet (ControlMaster socket {SessionPaths.of(osg).socket} not "
        f"answering); run manage.py pool_login osg")


def test_a_wrong_code_opens_nothing(osg, mfa):
    with pytest.raises(LoginFailed) as caught:
        pool_login(pool=osg, answer=Person(mfa, code="000000"))
    message = str(caught.value)
    assert message.startswith(f"pool osg: the login to {mfa.user}@127.0.0.1:{mfa.port} failed (")
    assert "Permission denied (keyboard-interactive)" in message
    assert message.endswith("nothing was kept: run manage.py pool_login osg again")
    assert pool_login_status(osg).startswith("pool osg: no SSH session yet")


def test_a_changed_host_key_is_refused_before_any_prompt(osg, mfa, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(other)],
                   check=True)
    osg.host_key = Path(f"{other}.pub").read_text()
    person = Person(mfa)
    with pytest.raises(HostKeyError) as caught:
        pool_login(pool=osg, answer=person)
    assert str(caught.value).startswith("pool osg: the host's key is not the pinned one; "
                                        "refusing to log in")
    assert "Host key verification failed." in str(caught.value)
    assert person.prompts == []
    known_hosts = SessionPaths.of(osg).known_hosts.read_text().split()
    assert known_hosts == [f"[127.0.0.1]:{mfa.port}", *Path(f"{other}.pub").read_text().split()]


def test_the_command_reads_the_answers_from_the_terminal(osg, mfa, monkeypatch):
    person = Person(mfa)
    monkeypatch.setattr(pool_login_command.getpass, "getpass", person)
    out = StringIO()
    call_command("pool_login", "osg", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == (f"pool osg: logging in to {mfa.user}@127.0.0.1:{mfa.port}; answer the "
                        f"host's prompts (nothing is echoed or stored)")
    assert lines[1].startswith("pool osg: SSH session open")
    assert len(person.prompts) == 2
    status = StringIO()
    call_command("pool_login", "osg", "--status", stdout=status)
    assert status.getvalue().startswith("pool osg: SSH session open")
    logout = StringIO()
    call_command("pool_login", "osg", "--logout", stdout=logout)
    assert logout.getvalue() == "pool osg: SSH session closed\n"
    assert pool_login_status(osg).startswith("pool osg: no SSH session yet")
    with pytest.raises(CommandError, match="pool beta: not a session pool"):
        WorkerPool.objects.create(name="beta", kind="slurm", host="h", user="u")
        call_command("pool_login", "beta")


def test_a_whole_scaler_step_runs_through_the_session_and_no_secret_is_kept(
        osg, mfa, redis_conn, redis_server, settings, condor_env, tmp_path, caplog, capsys):
    settings.REDIS_URL = redis_server.url
    osg.redis_url = redis_server.url
    osg.work_dir = str(tmp_path / "osg")
    osg.queues = "logintest"
    osg.command_env = "\n".join(f"{name}={value}" for name, value in condor_env.items())
    osg.save()
    queue = Queue("logintest:normal", connection=redis_conn, serializer=JSONSerializer)
    for i in range(2):
        queue.enqueue("noop", record={"id": f"mol-{i}", "input": {}}, spec=NOOP_SPEC)
    person = Person(mfa)
    pool_login(pool=osg, answer=person)
    logins = accepted_logins(mfa)

    ScaleLoop(connection=redis_conn, pool_name="osg").step()
    event = ScalerEvent.objects.get(pool=osg)
    assert event.kind == "submit", event.message
    assert event.details["uploaded"] == ["bundle", "env file"]
    assert len(json.loads(Path(condor_env["CONDOR_STANDIN_STATE"]).read_text())["jobs"]) == 2
    assert accepted_logins(mfa) == logins

    secrets = [person.answers[0], person.answers[1]]
    assert secrets[0] == mfa.password and len(secrets[1]) == 6
    stored = serializers.serialize("json", [*WorkerPool.objects.all(),
                                            *ScalerEvent.objects.all()])
    files = [path for root in (Path(settings.VAR_DIR), Path(settings.SSH_SESSION_DIR),
                               tmp_path / "osg")
             for path in root.rglob("*") if path.is_file()]
    assert Path(settings.SSH_SESSION_DIR) / "osg.known_hosts" in files
    captured = capsys.readouterr()
    for secret in secrets:
        assert secret not in stored
        assert secret not in caplog.text + captured.out + captured.err
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
    assert oct(Path(settings.SSH_SESSION_DIR).stat().st_mode & 0o777) == "0o700"
    assert list(Path(settings.SSH_SESSION_DIR).glob("askpass-*")) == []


def test_an_abandoned_prompt_leaves_no_session_and_no_bridge(osg, mfa):
    def no_answer(prompt):
        raise EOFError
    with pytest.raises(LoginFailed) as caught:
        pool_login(pool=osg, answer=no_answer)
    assert str(caught.value) == ("pool osg: no answer to the host's prompt (end of input); "
                                 "nothing was kept")
    assert pool_login_status(osg).startswith("pool osg: no SSH session yet")
    assert list(Path(SessionPaths.of(osg).directory).glob("askpass-*")) == []


def test_a_login_not_finished_in_time_is_given_up(osg, mfa):
    def slow(prompt):
        time.sleep(1.5)
        return mfa.password
    with pytest.raises(LoginFailed) as caught:
        pool_login(pool=osg, answer=slow, timeout=1)
    assert str(caught.value) == (f"pool osg: no login to {mfa.user}@127.0.0.1:{mfa.port} "
                                 f"within 1 s; nothing was kept")
    assert pool_login_status(osg).startswith("pool osg: no SSH session yet")
    assert ssh_processes_of(osg) == []  # the OpenSSH that was waiting for an answer is gone


@pytest.mark.django_db(transaction=True)  # the forked command reads the pool from the database
def test_the_command_asks_on_a_real_terminal_without_echo(osg, mfa):
    """`manage.py pool_login osg` in a child on a pseudo-terminal, answered as a person types."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty, as at a login shell
        code = 1
        try:
            connections.close_all()
            with open("/dev/tty", "w") as tty:
                call_command("pool_login", "osg", stdout=tty, stderr=tty)
            code = 0
        except BaseException:
            traceback.print_exc(file=open("/dev/tty", "w"))
        finally:
            os._exit(code)
    seen = b""
    code = mfa.code()
    answers = [(b"Password: ", mfa.password), (b"One-time password (OATH) for", code)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if answers and answers[0][0] in seen:
            _, answer = answers.pop(0)
            seen = seen.replace(_, b"<asked>", 1)
            os.write(terminal, answer.encode() + b"\n")
        if not select.select([terminal], [], [], 0.2)[0]:
            continue
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the child has exited
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    text = seen.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert text.count("<asked>") == 2, text
    assert f"pool osg: SSH session open to {mfa.user}@127.0.0.1:{mfa.port}" in text
    assert mfa.password not in text and code not in text  # getpass: nothing echoed
    assert pool_login_status(osg) is None
