"""Real servers for the test suite: redis-server and, when none answers, PostgreSQL."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class RedisServer:
    port: int
    password: str | None
    process: subprocess.Popen
    directory: Path

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart_empty(self) -> None:
        """Stop and start on the same port, with nothing kept (as the machine's Redis does)."""
        self.stop()
        self.process = _spawn_redis(self.port, self.password, self.directory)


def _spawn_redis(port: int, password: str | None, directory: Path) -> subprocess.Popen:
    argv = [
        shutil.which("redis-server") or "redis-server",
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(directory), "--logfile", str(directory / "redis.log"),
    ]
    if password:
        argv += ["--requirepass", password]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return process


def start_redis(password: str | None = None) -> RedisServer:
    directory = Path(tempfile.mkdtemp(prefix="htportal-redis-"))
    port = free_port()
    return RedisServer(port, password, _spawn_redis(port, password, directory), directory)


def postgres_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class PostgresServer:
    port: int
    directory: Path
    bindir: Path

    def stop(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D",
             str(self.directory / "data"), "-m", "fast", "stop"],
            check=False, capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """A throwaway cluster from Debian's postgresql package, owned by the postgres user."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise RuntimeError(
            "no PostgreSQL answers on 127.0.0.1:5432 and none is installed: "
            "run `apt-get install -y postgresql` (bin/install does) or set HTPORTAL_TEST_POSTGRES_URL"
        )
    bindir = candidates[-1].parent
    directory = Path(tempfile.mkdtemp(prefix="htportal-pg-"))
    os.chmod(directory, 0o755)
    shutil.chown(directory, "postgres", "postgres")
    port = free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_postgres + [str(bindir / "initdb"), "-A", "trust", "-U", "postgres",
                                  "-D", str(directory / "data")], check=True, capture_output=True)
    subprocess.run(as_postgres + [str(bindir / "pg_ctl"), "-D", str(directory / "data"), "-l",
                                  str(directory / "log"), "-o",
                                  f"-p {port} -k {directory} -c listen_addresses=127.0.0.1",
                                  "-w", "start"], check=True, capture_output=True)
    return PostgresServer(port, directory, bindir)
