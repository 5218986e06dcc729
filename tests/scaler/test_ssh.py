"""SshRemote against a real sshd (tests/scaler/conftest.py): pinned host keys, errors, commands;
SessionRemote through an OpenSSH ControlMaster to the same sshd."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.servers import free_port
from workers.scaler.base import AuthenticationFailed, HostKeyError, ScalerError, UnreachableError
from workers.models import WorkerPool
from workers.scaler.sessions import (SessionGone, SessionPaths, SessionRemote,
                                     known_hosts_write, pool_logout)
from workers.scaler.ssh import SshRemote, SshTarget, fingerprint, host_key_parse


def keygen(directory: Path, name: str) -> Path:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)
    return path


def target(sshd, **changes) -> SshTarget:
    fields = {"host": sshd.host, "port": sshd.port, "user": sshd.user,
              "host_key": sshd.host_key_line, "key_path": str(sshd.user_key), **changes}
    return SshTarget(**fields)


def test_it_runs_commands_with_the_pinned_key(sshd):
    remote = SshRemote(target(sshd))
    try:
        result = remote.run("echo out; echo err >&2; exit 3")
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert remote.run("cat", stdin="from stdin").stdout == "from stdin"
        assert remote.run('echo "$A"', env={"A": "x y"}).stdout == "x y\n"
    finally:
        remote.close()


def test_a_changed_host_key_is_refused_naming_both_fingerprints(sshd, tmp_path):
    other = keygen(tmp_path, "other_host")
    other_line = Path(f"{other}.pub").read_text()
    remote = SshRemote(target(sshd, host_key=other_line))
    with pytest.raises(HostKeyError) as caught:
        remote.run("true")
    message = str(caught.value)
    assert f"{sshd.user}@127.0.0.1:{sshd.port}: the host's key changed" in message
    assert f"pinned {fingerprint(host_key_parse(other_line))}" in message
    assert f"offered {fingerprint(host_key_parse(sshd.host_key_line))}" in message
    assert remote.commands  # recorded, never run: no connection was kept
    assert remote._client is None


def test_an_unknown_host_key_is_refused_with_the_offered_fingerprint(sshd):
    with pytest.raises(HostKeyError) as caught:
        SshRemote(target(sshd, host_key="")).run("true")
    assert "the host's key is not pinned (it offers " \
           f"{fingerprint(host_key_parse(sshd.host_key_line))})" in str(caught.value)


def test_the_pinned_key_is_looked_up_under_host_and_port(sshd):
    # A key pinned for the host but another port is a different host to OpenSSH and to us.
    remote = SshRemote(target(sshd))
    client = remote._new_client()
    assert client.get_host_keys().lookup(f"[127.0.0.1]:{sshd.port}") is not None
    assert client.get_host_keys().lookup("127.0.0.1") is None


def test_a_closed_port_is_unreachable_quickly(sshd):
    port = free_port()
    started = time.monotonic()
    with pytest.raises(UnreachableError) as caught:
        SshRemote(target(sshd, port=port)).run("true")
    assert time.monotonic() - started < 3
    assert str(caught.value) == f"{sshd.user}@127.0.0.1:{port}: unreachable (connection refused)"


def test_a_refused_user_key_fails_authentication(sshd, tmp_path):
    stranger = keygen(tmp_path, "stranger")
    with pytest.raises(AuthenticationFailed) as caught:
        SshRemote(target(sshd, key_path=str(stranger))).run("true")
    assert str(caught.value).startswith(
        f"{sshd.user}@127.0.0.1:{sshd.port}: the host refused the key {stranger}")


def test_a_missing_key_file_is_said(sshd, tmp_path):
    with pytest.raises(AuthenticationFailed, match="cannot read the private key"):
        SshRemote(target(sshd, key_path=str(tmp_path / "nope"))).run("true")


def test_it_reuses_one_connection_and_reconnects_when_lost(sshd):
    remote = SshRemote(target(sshd))
    try:
        remote.run("true")
        first = remote._client
        remote.run("true")
        assert remote._client is first
        first.get_transport().close()  # the network dropped it
        assert remote.run("echo again").stdout == "again\n"
        assert remote._client is not first
    finally:
        remote.close()


def test_a_command_that_hangs_times_out(sshd):
    remote = SshRemote(target(sshd))
    try:
        started = time.monotonic()
        with pytest.raises(ScalerError, match=r"`sleep 30` did not finish within 0.5 s"):
            remote.run("sleep 30", timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        remote.close()


def test_put_writes_with_the_mode_and_sha256_reads_it(sshd, tmp_path):
    remote = SshRemote(target(sshd))
    path = tmp_path / "env"
    try:
        assert remote.sha256(str(path)) is None
        remote.put(str(path), b"SECRET=1\n", mode=0o600)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert path.read_bytes() == b"SECRET=1\n"
        assert remote.sha256(str(path)) == hashlib.sha256(b"SECRET=1\n").hexdigest()
        assert sorted(os.listdir(tmp_path)) == ["env"]  # no partial file left behind
    finally:
        remote.close()


def test_host_key_lines_are_read_in_the_usual_forms(sshd):
    key_type, blob = sshd.host_key_line.split()
    for line in (f"{key_type} {blob}", f"{key_type} {blob} root@node",
                 f"[127.0.0.1]:{sshd.port} {key_type} {blob}"):
        assert host_key_parse(line).get_base64() == blob
    with pytest.raises(ValueError, match="expected 'TYPE BASE64'"):
        host_key_parse("not a key")
    with pytest.raises(ValueError, match="cannot be read"):
        host_key_parse(f"{key_type} AAAAnotbase64!")


# -- SessionRemote: through an OpenSSH ControlMaster a person opened (workers/scaler/sessions.py)

@pytest.fixture
def session_pool(sshd, settings, monkeypatch):
    """An unsaved slurm pool reached through a session; the socket directory is short (a unix
    socket path has ~90 usable characters)."""
    directory = Path(tempfile.mkdtemp(prefix="hts-"))
    settings.SSH_SESSION_DIR = directory
    settings.SSH_SESSION_POOLS = ["ap"]
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    pool = WorkerPool(name="ap", kind="slurm", host=sshd.host, port=sshd.port, user=sshd.user,
                      host_key=sshd.host_key_line)
    yield pool
    subprocess.run(["ssh", "-F", "/dev/null", "-S", str(directory / "ap.sock"), "-O", "exit",
                    "x"], capture_output=True, timeout=10)
    shutil.rmtree(directory, ignore_errors=True)


def open_master_by_hand(sshd, pool) -> None:
    """What the docs tell a person to type: ssh -M -S PATH -o ControlPersist=yes ... (here with
    the test key; on a real access point OpenSSH asks for the password and code)."""
    paths = SessionPaths.of(pool)
    known_hosts_write(pool=pool, paths=paths)
    subprocess.run(["ssh", "-F", "/dev/null", "-M", "-S", str(paths.socket), "-o",
                    "ControlPersist=yes", "-N", "-f", "-i", str(sshd.user_key), "-o",
                    "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={paths.known_hosts}",
                    "-p", str(sshd.port), f"{sshd.user}@{sshd.host}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)


def sshd_logins(sshd) -> int:
    return (sshd.directory / "sshd.log").read_text().count("Accepted publickey")


def sshd_attempts(sshd) -> int:
    """Logins and connections that got past the banner (the fixture's port probe does not)."""
    text = (sshd.directory / "sshd.log").read_text()
    return text.count("Accepted publickey") + text.count("[preauth]")


def test_a_session_remote_runs_commands_over_a_master_opened_by_hand(sshd, session_pool,
                                                                     tmp_path):
    open_master_by_hand(sshd, session_pool)
    logins = sshd_logins(sshd)
    remote = SessionRemote(pool=session_pool)
    result = remote.run("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert remote.run("cat", stdin="from stdin").stdout == "from stdin"
    assert remote.run('echo "$A"', env={"A": "x y"}).stdout == "x y\n"
    path = tmp_path / "bundle.pyz"
    data = bytes(range(256)) * 4096  # binary, 1 MiB
    remote.put(str(path), data, mode=0o644)
    assert path.read_bytes() == data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert remote.sha256(str(path)) == hashlib.sha256(data).hexdigest()
    assert remote.sha256(str(tmp_path / "nope")) is None
    started = time.monotonic()
    with pytest.raises(ScalerError, match=r"`sleep 30` did not finish within 0.5 s"):
        remote.run("sleep 30", timeout=0.5)
    assert time.monotonic() - started < 3
    assert sshd_logins(sshd) == logins  # all of it over the one connection


def test_without_a_master_nothing_connects_and_a_login_is_asked_for(sshd, session_pool):
    attempts = sshd_attempts(sshd)
    socket = SessionPaths.of(session_pool).socket
    with pytest.raises(SessionGone) as caught:
        SessionRemote(pool=session_pool).run("true")
    assert str(caught.value) == (f"pool ap: no SSH session yet (ControlMaster socket {socket} "
                                 f"not answering); run manage.py pool_login ap")
    assert isinstance(caught.value, UnreachableError)  # the loop drops the connection state
    time.sleep(0.2)  # what sshd would log of a connection attempt is written by then
    assert sshd_attempts(sshd) == attempts  # no SSH connection, not even a key exchange


def test_a_closed_master_is_said_gone(sshd, session_pool):
    open_master_by_hand(sshd, session_pool)
    paths = SessionPaths.of(session_pool)
    paths.note.write_text("{}")  # as pool_login leaves it
    remote = SessionRemote(pool=session_pool)
    assert remote.run("true").exit_code == 0
    assert pool_logout(pool=session_pool) == "pool ap: SSH session closed"
    with pytest.raises(SessionGone, match=r"^pool ap: no SSH session yet"):
        remote.run("true")  # pool_logout removed the note: no session was ever lost
    open_master_by_hand(sshd, session_pool)
    paths.note.write_text("{}")
    subprocess.run(["ssh", "-F", "/dev/null", "-S", str(paths.socket), "-O", "exit", "x"],
                   capture_output=True, timeout=10)
    with pytest.raises(SessionGone) as caught:
        remote.run("true")
    assert str(caught.value) == (f"pool ap: the SSH session has gone (ControlMaster socket "
                                 f"{paths.socket} not answering); run manage.py pool_login ap")


def test_a_socket_path_too_long_is_refused_with_the_setting_to_change(session_pool, settings):
    settings.SSH_SESSION_DIR = Path("/" + "d" * 100)
    with pytest.raises(ScalerError, match=r"longer than 90 characters .*set "
                                          r"HTPORTAL_SSH_SESSION_DIR to a shorter directory"):
        SessionPaths.of(session_pool)
