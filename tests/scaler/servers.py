"""Real servers for the scaler's tests and bench: OpenSSH's sshd and a single-node SLURM.

Both are test-owned: their own temporary directory, free ports, pid and log files, so they run
beside any sshd or SLURM the machine has (see /work/shared/RECIPES.md, sections 1 and 2).

    sshd = start_sshd()          # 127.0.0.1, a free port, a key pair made for the run
    client = sshd.client()       # paramiko, host key pinned, RejectPolicy
    slurm = start_slurm()        # slurmctld + slurmd (auth/none), node idle when it returns
    slurm.env                    # {"SLURM_CONF": ...}: what a client command needs
    remote = sshd.remote()       # workers.scaler.ssh.SshRemote to it
    mfa = start_mfa_sshd()       # sshd asking a password and a TOTP code (keyboard-interactive)
    mfa.password, mfa.code()     # the answers to its two prompts
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import struct
import sys
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import paramiko

from tests.servers import free_port, wait_for_port
from workers.scaler.ssh import SshRemote, SshTarget

SSHD = "/usr/sbin/sshd"
SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
"""
# The second-factor access point: keyboard-interactive only, through PAM. OpenSSH 9.2 on Linux
# has no keyboard-interactive without PAM (its other devices are BSD's), so this sshd runs
# under a name of its own (argv[0], a symlink): PAM then reads /etc/pam.d/<that name>, a stack
# written for the run (root needed, as the tests are) that asks "Password: " (pam_exec checks
# it against a file of the run) and then a real RFC 6238 code (pam_oath, package libpam-oath),
# as OSPool's access points ask a password or key and a TOTP code.
MFA_SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication yes
AuthenticationMethods keyboard-interactive
UsePAM yes
StrictModes no
PermitRootLogin yes
Subsystem sftp internal-sftp
"""
MFA_PAM_STACK = """\
auth required pam_exec.so expose_authtok quiet {dir}/check-password
auth required pam_oath.so usersfile={dir}/oath.users window=10 digits=6
account required pam_permit.so
session required pam_permit.so
password required pam_deny.so
"""
# pam_exec hands the password on stdin, ended by a NUL byte.
CHECK_PASSWORD = """\
#!{python}
import sys
given = sys.stdin.buffer.read().split(b"\\0")[0]
sys.exit(0 if given == open("{dir}/password", "rb").read().strip() else 1)
"""
PAM_OATH = "/lib/x86_64-linux-gnu/security/pam_oath.so"
TOTP_STEP_S = 30


def totp(secret: bytes, step: int) -> str:
    """RFC 6238's six digits of `secret` for time step `step` (HMAC-SHA1, 30 s)."""
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


# SchedulerParameters: schedule at once rather than on the default multi-second tick.
SLURM_CONF = """\
ClusterName=htportaltest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class SshServer:
    """sshd on 127.0.0.1:port accepting `user_key` for `user`, with `host_key_line` pinned."""

    host: str
    port: int
    user: str
    user_key: Path               # the private key (ed25519, no passphrase)
    host_key_line: str           # "ssh-ed25519 AAAA..." (the host's .pub, without comment)
    directory: Path
    process: subprocess.Popen

    def host_key(self) -> paramiko.PKey:
        key_type, blob = self.host_key_line.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))

    def client(self) -> paramiko.SSHClient:
        """A connected paramiko client that trusts only the pinned host key."""
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = self.host_key()
        client.get_host_keys().add(f"[{self.host}]:{self.port}", key.get_name(), key)
        client.connect(self.host, port=self.port, username=self.user,
                       pkey=paramiko.Ed25519Key.from_private_key_file(str(self.user_key)),
                       look_for_keys=False, allow_agent=False, timeout=10)
        return client

    def remote(self) -> SshRemote:
        """The scaler's own Remote (workers.scaler.ssh) for this server's user and keys."""
        return SshRemote(SshTarget(self.host, self.port, self.user, self.host_key_line,
                                   str(self.user_key)))

    def stop(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_sshd() -> SshServer:
    """sshd -D on a free port, with a host key and a user key made for this run."""
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    directory = Path(tempfile.mkdtemp(prefix="htportal-sshd-"))
    for name in ("host_ed25519", "user_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "",
                        "-f", str(directory / name)], check=True)
    shutil.copy(directory / "user_ed25519.pub", directory / "authorized_keys")
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(SSHD_CONFIG.format(port=port, dir=directory))
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True, capture_output=True)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=open(directory / "sshd.log", "w"))
    wait_for_port(port)
    host_key_line = " ".join((directory / "host_ed25519.pub").read_text().split()[:2])
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    return SshServer("127.0.0.1", port, user, directory / "user_ed25519", host_key_line,
                     directory, process)


@dataclass
class MfaSshServer:
    """sshd on 127.0.0.1:port that lets `user` in only after a password and a TOTP code."""

    host: str
    port: int
    user: str
    password: str
    totp_secret: bytes
    host_key_line: str
    directory: Path
    pam_file: Path
    process: subprocess.Popen
    last_step: Optional[int] = None

    def code(self) -> str:
        """A code the server takes now. pam_oath refuses a code used before, so each call
        gives the next time step's (within its window of 10) once the current one is used."""
        step = int(time.time()) // TOTP_STEP_S
        if self.last_step is not None and step <= self.last_step:
            step = self.last_step + 1
        self.last_step = step
        return totp(self.totp_secret, step)

    def log(self) -> str:
        return (self.directory / "sshd.log").read_text()

    def stop(self) -> None:
        _stop(self.process)
        self.pam_file.unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_mfa_sshd() -> MfaSshServer:
    """sshd -D on a free port asking "Password: " then "One-time password (OATH) ...: "."""
    if not os.path.exists(PAM_OATH):
        raise RuntimeError(f"{PAM_OATH} is missing: apt-get install -y libpam-oath")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="htportal-mfa-sshd-"))
    os.chmod(directory, 0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "",
                    "-f", str(directory / "host_ed25519")], check=True)
    (directory / "authorized_keys").write_text("")
    password = f"pw-{secrets.token_hex(8)}"
    (directory / "password").write_text(password + "\n")
    os.chmod(directory / "password", 0o600)
    checker = directory / "check-password"
    checker.write_text(CHECK_PASSWORD.format(python=sys.executable, dir=directory))
    os.chmod(checker, 0o755)
    secret = secrets.token_bytes(20)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    users = directory / "oath.users"
    users.write_text(f"HOTP/T30/6 {user} - {secret.hex()}\n")
    os.chmod(users, 0o600)
    service = f"htportal-test-sshd-{secrets.token_hex(4)}"
    pam_file = Path("/etc/pam.d") / service
    pam_file.write_text(MFA_PAM_STACK.format(dir=directory))
    program = directory / service  # PAM's service name is sshd's argv[0] name
    program.symlink_to(SSHD)
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(MFA_SSHD_CONFIG.format(port=port, dir=directory))
    try:
        subprocess.run([str(program), "-t", "-f", str(config)], check=True, capture_output=True)
        process = subprocess.Popen([str(program), "-D", "-e", "-f", str(config)],
                                   stdout=subprocess.DEVNULL,
                                   stderr=open(directory / "sshd.log", "w"))
        wait_for_port(port)
    except Exception:
        pam_file.unlink(missing_ok=True)
        raise
    host_key_line = " ".join((directory / "host_ed25519.pub").read_text().split()[:2])
    return MfaSshServer("127.0.0.1", port, user, password, secret, host_key_line, directory,
                        pam_file, process)


@dataclass
class SlurmCluster:
    """A single-node SLURM (slurmctld + slurmd -N node) of its own, reached with `env`."""

    conf: Path
    node: str
    directory: Path
    processes: List[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> Dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=30)

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%T").stdout.strip()

    def wait_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.node_state() == "idle":
                return
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited {process.returncode}: "
                                       f"{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"SLURM node {self.node} is {self.node_state()!r}, not idle, after "
                           f"{timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        tails = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.directory / name
            if path.exists():
                tails.append(f"{name}: " + " | ".join(path.read_text().splitlines()[-5:]))
        return "; ".join(tails)

    def cancel_all(self, timeout: float = 15) -> None:
        """Cancel every job of this cluster and wait until none runs: a job left running when
        the daemons stop keeps its slurmstepd and processes alive (a worker retrying a Redis
        that is gone, forever)."""
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        self.run("scancel", "--full", "-u", user)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.run(
                "squeue", "-h", "-t", "RUNNING,COMPLETING,CONFIGURING").stdout.strip():
            time.sleep(0.2)

    def stop(self) -> None:
        if all(process.poll() is None for process in self.processes):
            self.cancel_all()
        # SIGTERM to the -D daemons: slurmd first, so it does not wait for a gone controller.
        for process in reversed(self.processes):
            _stop(process, timeout=15)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_slurm(cpus: int = 2) -> SlurmCluster:
    """slurmctld -D and slurmd -D on free ports with auth/none; returns once the node is idle."""
    directory = Path(tempfile.mkdtemp(prefix="htportal-slurm-"))
    os.chmod(directory, 0o755)
    for name in ("state", "spool"):
        (directory / name).mkdir()
    node = "testnode"
    conf = directory / "slurm.conf"
    conf.write_text(SLURM_CONF.format(ctld_port=free_port(), d_port=free_port(), dir=directory,
                                      node=node, cpus=cpus))
    cluster = SlurmCluster(conf, node, directory)
    env = {**os.environ, **cluster.env}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    cluster.processes.append(subprocess.Popen(["slurmctld", "-D"], **quiet))
    cluster.processes.append(subprocess.Popen(["slurmd", "-D", "-N", node], **quiet))
    try:
        cluster.wait_idle()
    except Exception:
        cluster.stop()
        raise
    return cluster

