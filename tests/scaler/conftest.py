"""Fixtures of real servers for the scaler: sshd (always cheap) and SLURM (started only when a
test asks for it). Both are test-owned and stopped at the session's end (tests/scaler/servers.py).

HTCondor's daemons cannot be installed here: its tests run the stand-ins in standins/, which
reproduce the documented outputs of condor_submit, condor_q and condor_rm.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.scaler import servers

STANDINS = Path(__file__).resolve().parent / "standins"


@pytest.fixture(scope="session")
def sshd():
    """servers.SshServer: .host, .port, .user, .user_key (path), .host_key_line, .client()
    (paramiko, host key pinned) and .remote() (workers.scaler.ssh.SshRemote)."""
    server = servers.start_sshd()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm():
    """servers.SlurmCluster: .conf (SLURM_CONF path), .env ({"SLURM_CONF": ...}), .node, .run()."""
    cluster = servers.start_slurm()
    yield cluster
    cluster.stop()


@pytest.fixture
def remote(sshd):
    remote = sshd.remote()
    yield remote
    remote.close()


@pytest.fixture
def work_dir(tmp_path) -> str:
    """A remote work directory (sshd runs here, so a local path is the remote one)."""
    path = tmp_path / "pool"
    return str(path)


@pytest.fixture
def condor_env(tmp_path) -> dict:
    """The Remote env putting the HTCondor stand-ins first on PATH, with their queue file."""
    return {"PATH": f"{STANDINS}:{os.environ['PATH']}",
            "CONDOR_STANDIN_STATE": str(tmp_path / "condor-queue.json")}
