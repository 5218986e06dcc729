"""SSH sessions a person opened: how the scaler reaches an access point that asks for a second
factor (a password and a one-time code) at every login, such as OSPool's newer access points.

The scaler cannot answer a TOTP prompt, so a person logs in once with `manage.py pool_login
POOL`: it starts OpenSSH as a ControlMaster (`ssh -M -S SOCKET -o ControlPersist=yes -N -f`)
and answers the host's keyboard-interactive prompts through SSH_ASKPASS, which this process
bridges to the terminal (getpass) or, in tests, to a callback. The master then lives on its
own, kept alive by ServerAliveInterval, and the scaler's SessionRemote runs every command as
`ssh -S SOCKET -o ControlMaster=no HOST CMD` over it: no key, no password.

Why OpenSSH and not a paramiko session: a paramiko Transport lives only in the process that
opened it, so a session from `pool_login` could serve `manage.py scale` only through a daemon of
our own; OpenSSH's ControlMaster is that daemon already, survives restarts of the scaler, and
is what users of these access points open by hand anyway (`ssh -M -S PATH -o ControlPersist=yes
user@host` works as well as `pool_login`, given the same socket path).

Safety:
- No answer is stored: each one goes from getpass (or the callback) through a FIFO in a 0700
  directory to OpenSSH's askpass call, and is gone. OpenSSH never logs them.
- Host keys stay pinned: the login writes a known_hosts file holding only the pool's pinned key
  and runs with StrictHostKeyChecking=yes, no user or global known_hosts, no ~/.ssh/config.
- A command never opens a connection of its own: ProxyCommand=false makes OpenSSH's fallback
  (when the socket does not answer) fail at once instead of logging in some other way.
"""
from __future__ import annotations

import json
import logging
import os
import re
import select
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional

from django.conf import settings
from django.utils import timezone

from workers.models import WorkerPool
from workers.scaler.base import CommandResult, HostKeyError, ScalerError, UnreachableError
from workers.scaler.ssh import (COMMAND_TIMEOUT_S, RECORDED_COMMANDS, host_key_parse,
                                known_hosts_name, shell_path)

log = logging.getLogger(__name__)

SSH = "ssh"
# sun_path holds 108 bytes and OpenSSH binds a temporary name 17 characters longer first.
SOCKET_PATH_MAX = 90
CHECK_TIMEOUT_S = 10.0
LOGIN_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 15
# Keep the master's connection alive through idle NAT and firewalls; three missed answers
# (3 minutes) end it, and then the scaler says a login is needed.
SERVER_ALIVE_INTERVAL_S = 60
SERVER_ALIVE_COUNT_MAX = 3
PROMPT_MAX = 4096
ANSWER_MAX = 1024
LOG_TAIL_LINES = 3
ASKPASS_IO_S = 10.0
_MASTER_PID = re.compile(r"Master running \(pid=(\d+)\)")


class SessionGone(UnreachableError):
    """The pool's ControlMaster does not answer: a person must log in again (pool_login)."""


class LoginFailed(ScalerError):
    """pool_login could not open the session (refused answers, unreachable, timed out)."""


@dataclass(frozen=True)
class SessionPaths:
    directory: Path     # mode 0700
    socket: Path        # the ControlMaster socket
    known_hosts: Path   # the pool's pinned host key, as OpenSSH reads it
    note: Path          # when and by which pid the session was opened (no secret)
    log: Path           # OpenSSH's own messages of the last login

    @classmethod
    def of(cls, pool: WorkerPool) -> "SessionPaths":
        directory = Path(settings.SSH_SESSION_DIR)
        socket = directory / f"{pool.name}.sock"
        if len(str(socket)) > SOCKET_PATH_MAX:
            raise ScalerError(f"pool {pool.name}: the ControlMaster socket path {socket} is "
                              f"longer than {SOCKET_PATH_MAX} characters (a unix socket's "
                              f"limit); set HTPORTAL_SSH_SESSION_DIR to a shorter directory")
        return cls(directory, socket, directory / f"{pool.name}.known_hosts",
                   directory / f"{pool.name}.json", directory / f"{pool.name}.log")


def pool_uses_session(*, pool: WorkerPool) -> bool:
    """Whether the scaler reaches `pool` through a session a person opened (pool_login)."""
    return pool.uses_ssh and pool.name in settings.SSH_SESSION_POOLS


def ssh_options(*, pool: WorkerPool, paths: SessionPaths) -> List[str]:
    """What every ssh call of the pool shares: no user config, the socket, the pinned key."""
    return ["-F", "/dev/null", "-S", str(paths.socket), "-p", str(pool.port), "-l", pool.user,
            "-o", "StrictHostKeyChecking=yes",
            "-o", f'UserKnownHostsFile="{paths.known_hosts}"',
            "-o", "GlobalKnownHostsFile=/dev/null"]


def session_master_pid(*, pool: WorkerPool, paths: SessionPaths) -> Optional[int]:
    """The ControlMaster's pid when its socket answers (`ssh -O check`), else None."""
    try:
        result = subprocess.run(
            [SSH, *ssh_options(pool=pool, paths=paths), "-O", "check", pool.host],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    found = _MASTER_PID.search(result.stderr)
    return int(found.group(1)) if found else 0


def session_gone_message(*, pool: WorkerPool, paths: SessionPaths) -> str:
    """What the scaler, the CLI and the dashboard say when the pool needs a login."""
    if paths.note.exists():
        return (f"pool {pool.name}: the SSH session has gone (ControlMaster socket "
                f"{paths.socket} not answering); run manage.py pool_login {pool.name}")
    return (f"pool {pool.name}: no SSH session yet (ControlMaster socket {paths.socket} not "
            f"answering); run manage.py pool_login {pool.name}")


def pool_login_status(pool: WorkerPool) -> Optional[str]:
    """None when the scaler can reach `pool` without a person (a key pool, or an open
    session); else the sentence saying a login is needed (for the dashboard and the CLI)."""
    if not pool_uses_session(pool=pool):
        return None
    try:
        paths = SessionPaths.of(pool)
    except ScalerError as exc:
        return str(exc)
    if session_master_pid(pool=pool, paths=paths) is not None:
        return None
    return session_gone_message(pool=pool, paths=paths)


def session_describe(*, pool: WorkerPool) -> str:
    """One line for `pool_login --status` and `manage.py scale`: open since when, or needed."""
    needed = pool_login_status(pool)
    if needed:
        return needed
    paths = SessionPaths.of(pool)
    note = _read_note(paths)
    pid = session_master_pid(pool=pool, paths=paths)
    opened = f", opened {note['opened_at']}" if note.get("opened_at") else ""
    return (f"pool {pool.name}: SSH session open to {pool.address} (ControlMaster socket "
            f"{paths.socket}, master pid {pid}{opened})")


def _read_note(paths: SessionPaths) -> dict:
    try:
        note = json.loads(paths.note.read_text()[:10_000])
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def _write_private(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.part-{uuid.uuid4().hex[:8]}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


def _directory_ensure(paths: SessionPaths) -> None:
    paths.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.directory, 0o700)


def known_hosts_write(*, pool: WorkerPool, paths: SessionPaths) -> None:
    """The pool's pinned key as the only known host: OpenSSH refuses any other."""
    if not pool.host_key.strip():
        raise HostKeyError(f"pool {pool.name}: no host key is pinned; set the pool's host "
                           f"public key (after checking its fingerprint with the host's admin)")
    try:
        key = host_key_parse(pool.host_key)
    except ValueError as exc:
        raise HostKeyError(f"pool {pool.name}: {exc}") from None
    name = known_hosts_name(pool.host, pool.port)
    _write_private(paths.known_hosts, f"{name} {key.get_name()} {key.get_base64()}\n")


# -- the login -------------------------------------------------------------------------------

Answer = Callable[[str], str]


class _AskpassBridge:
    """SSH_ASKPASS for one login: OpenSSH runs the script with each prompt; the script hands
    the prompt to this process through one FIFO and prints the answer it reads from another.
    Both live in a 0700 directory removed after the login; nothing is written to a file.

    The prompts are answered in the calling thread (getpass must own the terminal there, so
    that ^C restores its echo)."""

    SCRIPT = '#!/bin/sh\nprintf "%s" "$1" > {req}\nexec cat {resp}\n'

    def __init__(self, directory: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="askpass-", dir=directory))
        self.req, self.resp = self.dir / "req", self.dir / "resp"
        os.mkfifo(self.req, 0o600)
        os.mkfifo(self.resp, 0o600)
        self.script = self.dir / "askpass"
        self.script.write_text(self.SCRIPT.format(req=shlex.quote(str(self.req)),
                                                  resp=shlex.quote(str(self.resp))))
        os.chmod(self.script, stat.S_IRWXU)
        self.prompts = 0
        self._fd: Optional[int] = None

    def __enter__(self) -> "_AskpassBridge":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.close(self._fd)
        shutil.rmtree(self.dir, ignore_errors=True)

    def prompt(self, wait: float) -> Optional[str]:
        """The next prompt OpenSSH asks, or None when none comes within `wait` seconds."""
        if self._fd is None:  # non-blocking: a FIFO with no writer yet reads as "nothing"
            self._fd = os.open(self.req, os.O_RDONLY | os.O_NONBLOCK)
        if not select.select([self._fd], [], [], wait)[0]:
            return None
        chunks, size = [], 0
        deadline = time.monotonic() + ASKPASS_IO_S
        while time.monotonic() < deadline:
            try:
                chunk = os.read(self._fd, PROMPT_MAX)
            except BlockingIOError:
                select.select([self._fd], [], [], 0.05)
                continue
            if not chunk:  # the script closed its end: the prompt is complete
                break
            size += len(chunk)
            if size <= PROMPT_MAX:
                chunks.append(chunk)
        os.close(self._fd)  # a fresh open for the next prompt
        self._fd = None
        self.prompts += 1
        return b"".join(chunks).decode("utf-8", "replace")

    def reply(self, answer: str) -> None:
        """Hand `answer` (one line) to the script waiting for it."""
        answer = (answer or "").replace("\r", "").replace("\n", "")[:ANSWER_MAX]
        deadline = time.monotonic() + ASKPASS_IO_S
        while True:
            try:
                fd = os.open(self.resp, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: the script has not opened its end yet
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        os.set_blocking(fd, True)
        try:
            os.write(fd, answer.encode() + b"\n")
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)


def pool_login(*, pool: WorkerPool, answer: Answer,
               timeout: float = LOGIN_TIMEOUT_S) -> str:
    """Open the pool's ControlMaster, answering the host's prompts with `answer(prompt)`;
    return the status line. An open session is kept (no prompt). LoginFailed or HostKeyError
    say why not; nothing of the answers is kept anywhere."""
    if not pool_uses_session(pool=pool):
        raise LoginFailed(f"pool {pool.name}: not a session pool (add it to "
                          f"HTPORTAL_SSH_SESSION_POOLS to reach it through pool_login)")
    paths = SessionPaths.of(pool)
    _directory_ensure(paths)
    if session_master_pid(pool=pool, paths=paths) is not None:
        return session_describe(pool=pool)
    known_hosts_write(pool=pool, paths=paths)
    if paths.socket.exists():  # left by a master that was killed: OpenSSH would not bind it
        paths.socket.unlink()
    argv = [SSH, *ssh_options(pool=pool, paths=paths), "-M", "-N", "-f",
            "-o", "ControlPersist=yes",
            "-o", f"ServerAliveInterval={SERVER_ALIVE_INTERVAL_S}",
            "-o", f"ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "NumberOfPasswordPrompts=1"]
    if pool.key_path:  # an access point may want the key and the code
        argv += ["-i", pool.key_path, "-o", "IdentitiesOnly=yes"]
    argv.append(pool.host)
    with _AskpassBridge(paths.directory) as bridge, open(paths.log, "w") as ssh_log:
        os.chmod(paths.log, 0o600)
        env = {**os.environ, "SSH_ASKPASS": str(bridge.script), "SSH_ASKPASS_REQUIRE": "force"}
        # Its own session: the master outlives this command and no terminal reaches OpenSSH,
        # so every prompt comes through the bridge. -f: OpenSSH returns once logged in.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=ssh_log, env=env, start_new_session=True)
        try:
            code = _dialogue(process, bridge, answer, time.monotonic() + timeout)
        except BaseException as exc:  # ^C or EOF at a prompt: no master is left behind
            process.kill()
            process.wait()
            if isinstance(exc, EOFError):
                raise LoginFailed(f"pool {pool.name}: no answer to the host's prompt (end of "
                                  f"input); nothing was kept") from None
            raise
        if code is None:
            process.kill()
            process.wait()
            raise LoginFailed(f"pool {pool.name}: no login to {pool.address} within "
                              f"{timeout:g} s; nothing was kept")
    if code != 0:
        raise _login_error(pool, paths)
    pid = session_master_pid(pool=pool, paths=paths)
    if pid is None:
        raise LoginFailed(f"pool {pool.name}: logged in to {pool.address}, but the "
                          f"ControlMaster socket {paths.socket} does not answer")
    _write_private(paths.note, json.dumps({
        "opened_at": timezone.now().isoformat(timespec="seconds"), "pid": pid,
        "address": pool.address, "prompts": bridge.prompts}) + "\n")
    # A pool backing off after "the SSH session has gone" is tried again at the next step.
    WorkerPool.objects.filter(pk=pool.pk).update(next_try_at=None)
    log.info("pool %s: SSH session opened to %s (master pid %s)", pool.name, pool.address, pid)
    return session_describe(pool=pool)


def _dialogue(process: subprocess.Popen, bridge: _AskpassBridge, answer: Answer,
              deadline: float) -> Optional[int]:
    """Answer OpenSSH's prompts until it exits (its exit code) or the deadline (None)."""
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        prompt = bridge.prompt(wait=0.2)
        if prompt is not None:
            bridge.reply(answer(prompt))
    return None


def _login_error(pool: WorkerPool, paths: SessionPaths) -> ScalerError:
    try:
        lines = [line.strip() for line in paths.log.read_text().splitlines() if line.strip()]
    except OSError:
        lines = []
    said = "; ".join(lines[-LOG_TAIL_LINES:]) or "ssh said nothing"
    if any("host key verification failed" in line.lower() for line in lines):
        return HostKeyError(f"pool {pool.name}: the host's key is not the pinned one; refusing "
                            f"to log in to {pool.address} ({said})")
    return LoginFailed(f"pool {pool.name}: the login to {pool.address} failed ({said}); "
                       f"nothing was kept: run manage.py pool_login {pool.name} again")


def pool_logout(*, pool: WorkerPool) -> str:
    """Close the pool's session (`ssh -O exit`); the scaler then says a login is needed."""
    paths = SessionPaths.of(pool)
    if session_master_pid(pool=pool, paths=paths) is None:
        return f"pool {pool.name}: no SSH session was open"
    subprocess.run([SSH, *ssh_options(pool=pool, paths=paths), "-O", "exit", pool.host],
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=CHECK_TIMEOUT_S)
    paths.note.unlink(missing_ok=True)
    return f"pool {pool.name}: SSH session closed"


# -- the scaler's side -----------------------------------------------------------------------

class SessionRemote:
    """base.Remote through the pool's ControlMaster (subprocess ssh): no key, no password."""

    def __init__(self, *, pool: WorkerPool) -> None:
        self.pool = pool
        self.paths = SessionPaths.of(pool)
        self.where = pool.address
        self.commands: Deque[str] = deque(maxlen=RECORDED_COMMANDS)

    def _argv(self, command: str) -> List[str]:
        return [SSH, *ssh_options(pool=self.pool, paths=self.paths), "-T",
                "-o", "ControlMaster=no", "-o", "BatchMode=yes",
                # Never a connection of its own when the socket does not answer.
                "-o", "ProxyCommand=false", self.pool.host, "--", command]

    def _run(self, command: str, data: bytes, timeout: float) -> subprocess.CompletedProcess:
        self.commands.append(command)
        try:
            result = subprocess.run(self._argv(command), input=data, capture_output=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ScalerError(f"{self.where}: `{_short(command)}` did not finish within "
                              f"{timeout:g} s") from None
        if result.returncode == 255 and session_master_pid(pool=self.pool,
                                                           paths=self.paths) is None:
            raise SessionGone(session_gone_message(pool=self.pool, paths=self.paths))
        return result

    def run(self, command: str, *, stdin: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, timeout: float = COMMAND_TIMEOUT_S
            ) -> CommandResult:
        """Run `command` through the login shell, as SshRemote.run."""
        if env:
            assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
            command = f"export {assignments}; {command}"
        result = self._run(command, (stdin or "").encode(), timeout)
        return CommandResult(result.returncode, result.stdout.decode("utf-8", "replace"),
                             result.stderr.decode("utf-8", "replace"))

    def put(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Write `data` to `path` atomically; never readable by others while it is written."""
        final = shell_path(path)
        partial = shell_path(f"{path}.part-{uuid.uuid4().hex[:8]}")
        command = (f"umask 077 && cat > {partial} && chmod {mode:o} {partial} && "
                   f"mv -f -- {partial} {final}")
        result = self._run(command, data, COMMAND_TIMEOUT_S)
        if result.returncode != 0:
            said = result.stderr.decode("utf-8", "replace").strip()[:300]
            raise ScalerError(f"{self.where}: cannot write {path} "
                              f"({said or f'exit {result.returncode}'})")

    def sha256(self, path: str) -> Optional[str]:
        quoted = shell_path(path)
        result = self.run(f"if [ -e {quoted} ]; then sha256sum -- {quoted} 2>/dev/null || "
                          f"shasum -a 256 -- {quoted}; else echo absent; fi")
        words = result.stdout.split()
        if result.exit_code == 0 and words == ["absent"]:
            return None
        if result.exit_code == 0 and words and re.fullmatch(r"\\?[0-9a-f]{64}", words[0]):
            return words[0].lstrip("\\")
        raise ScalerError(f"{self.where}: cannot read the sha256 of {path} "
                          f"({result.stderr.strip()[:300] or 'no sha256sum or shasum'})")

    def close(self) -> None:
        """Nothing: the session is the person's, and stays open for the next step."""


def _short(command: str, limit: int = 60) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."

