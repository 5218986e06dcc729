"""SshRemote: the Remote of slurm and condor pools, one paramiko client per pool.

The host key is pinned: the client knows only the pool's key (under "[host]:port" for a port
other than 22, as OpenSSH's known_hosts writes it) and refuses any other, so a changed or
unknown key never reaches authentication. Each step of a connection has its own timeout, and
a lost connection is opened again on the next command.
"""
from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import logging
import shlex
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Deque, Dict, Optional

import paramiko

from workers.scaler.base import (AuthenticationFailed, CommandResult, HostKeyError, ScalerError,
                                 UnreachableError)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
BANNER_TIMEOUT_S = 15.0
AUTH_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 60.0
RECORDED_COMMANDS = 200
_POLL_S = 0.005
_READ_BYTES = 65536


def host_key_parse(text: str) -> paramiko.PKey:
    """The public key in `text`: "TYPE BASE64 [comment]", or a known_hosts / ssh-keyscan line
    "HOST TYPE BASE64". ValueError says what is wrong."""
    tokens = text.split()
    for key_type, blob in zip(tokens, tokens[1:]):
        if not key_type.startswith(("ssh-", "ecdsa-", "sk-")):
            continue
        try:
            return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob, validate=True))
        except (binascii.Error, paramiko.SSHException, ValueError) as exc:
            raise ValueError(f"host key: {key_type} key that cannot be read ({exc})") from None
    raise ValueError("host key: expected 'TYPE BASE64' such as 'ssh-ed25519 AAAA...' "
                     "(the host's .pub file, or a line of ssh-keyscan)")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's fingerprint: "ssh-ed25519 SHA256:..."."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def shell_path(path: str) -> str:
    """`path` quoted for a POSIX shell, keeping a leading "~/" for the shell to expand."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def sftp_path(path: str) -> str:
    """SFTP paths are relative to the home directory already and do not expand "~"."""
    return path[2:] if path.startswith("~/") else path


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    user: str
    host_key: str           # the pinned public key line
    key_path: str = ""      # a private key file; "" = the SSH agent
    connect_timeout: float = CONNECT_TIMEOUT_S
    banner_timeout: float = BANNER_TIMEOUT_S
    auth_timeout: float = AUTH_TIMEOUT_S

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """RejectPolicy, with the offered key's fingerprint in the error (to pin it if it is right)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def missing_host_key(self, client, hostname, key) -> None:
        raise HostKeyError(f"{self.where}: the host's key is not pinned (it offers "
                           f"{fingerprint(key)}); refusing to connect: set the pool's host "
                           f"public key after checking this fingerprint with the host's admin")


class SshRemote:
    """base.Remote over SSH; connects on first use and again after a lost connection."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self.commands: Deque[str] = collections.deque(maxlen=RECORDED_COMMANDS)
        self._client: Optional[paramiko.SSHClient] = None
        self._sftp: Optional[paramiko.SFTPClient] = None

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        """The open client; opens one when there is none or the last one was lost."""
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        client = self._new_client()
        target = self.target
        try:
            client.connect(
                target.host, port=target.port, username=target.user, pkey=self._user_key(),
                allow_agent=not target.key_path, look_for_keys=False,
                timeout=target.connect_timeout, banner_timeout=target.banner_timeout,
                auth_timeout=target.auth_timeout, channel_timeout=target.connect_timeout)
        except BaseException as exc:
            client.close()
            raise self._connect_error(exc) from None
        log.info("ssh %s: connected", target.where)
        self._client = client
        return client

    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_RefuseUnknown(self.target.where))
        if self.target.host_key:
            key = host_key_parse(self.target.host_key)
            name = known_hosts_name(self.target.host, self.target.port)
            client.get_host_keys().add(name, key.get_name(), key)
        return client

    def _user_key(self) -> Optional[paramiko.PKey]:
        path = self.target.key_path
        if not path:
            return None
        try:
            return paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            raise AuthenticationFailed(f"{self.target.where}: the private key {path} is "
                                       f"encrypted; leave the key path blank to use the SSH "
                                       f"agent instead") from None
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise AuthenticationFailed(f"{self.target.where}: cannot read the private key "
                                       f"{path} ({exc})") from None

    def _connect_error(self, exc: BaseException) -> BaseException:
        where = self.target.where
        if isinstance(exc, ScalerError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyError(
                f"{where}: the host's key changed: pinned {fingerprint(exc.expected_key)}, "
                f"offered {fingerprint(exc.key)}; refusing to connect (if the host was "
                f"re-keyed, pin its new key in the pool)")
        if isinstance(exc, paramiko.AuthenticationException) or (
                isinstance(exc, paramiko.SSHException) and "authentication" in str(exc).lower()):
            key = self.target.key_path or "of the SSH agent"
            return AuthenticationFailed(f"{where}: the host refused the key {key} ({exc})")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return UnreachableError(f"{where}: unreachable (no answer within "
                                    f"{self.target.connect_timeout:g} s)")
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return UnreachableError(f"{where}: unreachable (connection refused)")
        if isinstance(exc, OSError):
            return UnreachableError(f"{where}: unreachable ({exc.strerror or exc})")
        if isinstance(exc, (paramiko.SSHException, EOFError)):
            return UnreachableError(f"{where}: no SSH session ({exc or type(exc).__name__})")
        return exc

    def close(self) -> None:
        for thing in (self._sftp, self._client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # a connection already gone has nothing to close
                    pass
        self._sftp = self._client = None

    # -- base.Remote ----------------------------------------------------------------------------

    def run(self, command: str, *, stdin: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, timeout: float = COMMAND_TIMEOUT_S
            ) -> CommandResult:
        """Run `command` through the login shell. `env` goes on the command line (sshd passes
        only AcceptEnv names), so it is never for secrets."""
        if env:
            assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
            command = f"export {assignments}; {command}"
        self.commands.append(command)
        client = self.connect()
        try:
            channel = client.get_transport().open_session(timeout=timeout)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
            return self._collect(channel, command, timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()
            raise UnreachableError(f"{self.target.where}: connection lost while running "
                                   f"`{_short(command)}` ({exc or type(exc).__name__})") from None

    def _collect(self, channel: paramiko.Channel, command: str, timeout: float) -> CommandResult:
        deadline = time.monotonic() + timeout
        out, err = [], []
        try:
            while True:
                busy = False
                while channel.recv_ready():
                    out.append(channel.recv(_READ_BYTES))
                    busy = True
                while channel.recv_stderr_ready():
                    err.append(channel.recv_stderr(_READ_BYTES))
                    busy = True
                if channel.exit_status_ready() and channel.eof_received and not busy:
                    break
                if time.monotonic() > deadline:
                    raise ScalerError(f"{self.target.where}: `{_short(command)}` did not finish "
                                      f"within {timeout:g} s")
                if not busy:
                    time.sleep(_POLL_S)
            return CommandResult(channel.recv_exit_status(),
                                 b"".join(out).decode("utf-8", "replace"),
                                 b"".join(err).decode("utf-8", "replace"))
        finally:
            channel.close()

    def put(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Write `data` to `path` atomically; the mode is set before any byte is written."""
        sftp = self._sftp_client()
        final = sftp_path(path)
        partial = f"{final}.part-{uuid.uuid4().hex[:8]}"
        try:
            with sftp.open(partial, "wb") as handle:
                handle.chmod(mode)
                handle.write(data)
            sftp.posix_rename(partial, final)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self.close()
            raise ScalerError(f"{self.target.where}: cannot write {path} over SFTP "
                              f"({exc or type(exc).__name__})") from None

    def sha256(self, path: str) -> Optional[str]:
        result = self.run(f"sha256sum -- {shell_path(path)}")
        if result.exit_code == 0 and result.stdout.strip():
            return result.stdout.split()[0].lstrip("\\")
        # No such file, or no sha256sum on the host: read the file over SFTP instead.
        sftp = self._sftp_client()
        try:
            with sftp.open(sftp_path(path), "rb") as handle:
                return hashlib.sha256(handle.read()).hexdigest()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ScalerError(f"{self.target.where}: cannot read {path} over SFTP ({exc})") from None

    def _sftp_client(self) -> paramiko.SFTPClient:
        client = self.connect()
        if self._sftp is None:
            try:
                self._sftp = client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self.close()
                raise UnreachableError(f"{self.target.where}: no SFTP session ({exc})") from None
        return self._sftp


def _short(command: str, limit: int = 60) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."
