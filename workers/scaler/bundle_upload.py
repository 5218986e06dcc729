"""The files a pool's workers need in its work directory: the worker bundle and the env file.

The bundle is built once per scaler process into var/bundle/ (its bytes are reproducible, so
its sha256 says whether a remote copy is current) and uploaded over SFTP only when the remote
copy's checksum differs. The env file holds HTPORTAL_REDIS_URL, mode 0600: the workers read
the Redis password from it, so it never stands on a command line or in a world-readable file.
"""
from __future__ import annotations

import hashlib
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from django.conf import settings

from workers.bundle import BundleError, BundleInfo, build_bundle
from workers.scaler.base import Remote, ScalerError
from workers.scaler.ssh import shell_path
from workers.scaler.slurm import command_words

log = logging.getLogger(__name__)

BUNDLE_NAME = "htportal-worker.pyz"
ENV_NAME = "worker.env"
LOG_DIR_NAME = "logs"
_built: Dict[Path, BundleInfo] = {}


@dataclass(frozen=True)
class PoolFiles:
    work_dir: str           # absolute, as the host resolved it
    bundle: str
    env_file: str
    log_dir: str
    uploaded: Tuple[str, ...] = ()   # what this call wrote: "bundle", "env file"


def bundle_build_once(*, out: Optional[Path] = None) -> BundleInfo:
    """The worker bundle, built on first use in this process (var/bundle/htportal-worker.pyz)."""
    out = Path(out or Path(settings.VAR_DIR) / "bundle" / BUNDLE_NAME)
    if out not in _built:
        try:
            _built[out] = build_bundle(out)
        except BundleError as exc:
            raise ScalerError(f"cannot build the worker bundle: {exc}") from None
        log.info("worker bundle %s: %s bytes, sha256 %s", out, f"{_built[out].size:,}",
                 _built[out].sha256)
    return _built[out]


def env_file_text(*, redis_url: str) -> str:
    """The env file: sourced by the batch script (`set -a; . FILE`), one variable."""
    return f"HTPORTAL_REDIS_URL={shlex.quote(redis_url)}\n"


def pool_files_ensure(*, remote: Remote, work_dir: str, redis_url: str,
                      bundle: Optional[BundleInfo]) -> PoolFiles:
    """Make the work directory and bring the bundle (when given) and the env file up to date;
    writes only what differs from what the host already has."""
    absolute = work_dir_make(remote=remote, work_dir=work_dir)
    files = PoolFiles(absolute, f"{absolute}/{BUNDLE_NAME}", f"{absolute}/{ENV_NAME}",
                      f"{absolute}/{LOG_DIR_NAME}")
    uploaded: List[str] = []
    if bundle is not None and _put_if_changed(remote, files.bundle, bundle.path.read_bytes(),
                                              bundle.sha256, mode=0o644):
        if remote.sha256(files.bundle) != bundle.sha256:
            raise ScalerError(f"{files.bundle}: the uploaded bundle's sha256 differs from "
                              f"{bundle.sha256} (disk full?)")
        uploaded.append("bundle")
    env = env_file_text(redis_url=redis_url).encode()
    if _put_if_changed(remote, files.env_file, env, hashlib.sha256(env).hexdigest(), mode=0o600):
        uploaded.append("env file")
    for name in uploaded:
        log.info("uploaded the %s to %s", name, absolute)
    return PoolFiles(files.work_dir, files.bundle, files.env_file, files.log_dir, tuple(uploaded))


def work_dir_make(*, remote: Remote, work_dir: str) -> str:
    """Create `work_dir` and its logs directory; its absolute path on the host."""
    quoted = shell_path(work_dir)
    result = remote.run(f"mkdir -p {quoted}/{LOG_DIR_NAME} && cd {quoted} && pwd -P")
    lines = result.stdout.strip().splitlines()
    if result.exit_code != 0 or not lines:
        raise ScalerError(f"cannot make the work directory {work_dir}: {command_words(result)}")
    return lines[-1]


def _put_if_changed(remote: Remote, path: str, data: bytes, sha256: str, *, mode: int) -> bool:
    if remote.sha256(path) == sha256:
        return False
    remote.put(path, data, mode=mode)
    return True
