"""The worker bundle: one zipapp a grid node runs with nothing but a Python 3.9+ interpreter.

    python3 htportal-worker.pyz --redis-url rediss://... QUEUE

It holds workers/runtime and the pure-Python packages it imports, copied from this
environment (rq, redis, and async_timeout, which redis imports on Python < 3.11), and leaves
out what the worker never imports (rq's command line, contrib, cron and worker pool).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

RUNTIME = Path(__file__).resolve().parent / "runtime"
# The worker's exit code is the bundle's (zipapp's own template would drop it).
MAIN_SOURCE = "import sys\nfrom workers.runtime.worker import main\nsys.exit(main())\n"
MAX_BYTES = 10 * 1024 * 1024
# (import name, distribution): everything the worker imports beyond the standard library, as
# found by importing it with `python3.9 -I` and only the bundle on sys.path.
DEPENDENCIES: Tuple[Tuple[str, str], ...] = (
    ("rq", "rq"), ("redis", "redis"), ("async_timeout", "async-timeout"),
)
LEFT_OUT = ("__pycache__", "*.pyc", "tests", "test_*.py")
LEFT_OUT_OF = {
    "rq": ("cli", "contrib", "cron.py", "cron_scheduler_registry.py", "worker_pool.py"),
}
# Imports every task function and parser, so a module missing from the bundle shows at build.
SELF_CHECK = """
import sys
sys.path.insert(0, sys.argv[1])
from workers.runtime import registry, worker
for entry in registry.TASKS + registry.PARSERS:
    entry.load()
"""


class BundleError(RuntimeError):
    """The bundle could not be built (a missing package, too big, fails its import check)."""


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    size: int
    sha256: str
    packages: Dict[str, str]  # distribution -> version


def build_bundle(out: Path) -> BundleInfo:
    """Write the worker bundle to `out` (one file) and check that it imports."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="htportal-bundle-") as tmp:
        staging = Path(tmp) / "src"
        _copy_tree(RUNTIME, staging / "workers" / "runtime", ())
        (staging / "workers" / "__init__.py").write_text(
            '"""htportal\'s worker runtime only: the Django app is not in the bundle."""\n')
        packages = {dist: _copy_dependency(name, dist, staging) for name, dist in DEPENDENCIES}
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_archive(staging, out)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise BundleError(f"{out}: {size:,} bytes, over the {MAX_BYTES:,}-byte limit")
    _self_check(out)
    return BundleInfo(out, size, hashlib.sha256(out.read_bytes()).hexdigest(), packages)


def _write_archive(staging: Path, out: Path) -> None:
    """zipapp's layout (a shebang line, then a zip with __main__.py), written reproducibly:
    sorted entries with one fixed timestamp, so the same sources give the same bytes and the
    scaler can tell from the checksum whether a remote copy is current."""
    with out.open("wb") as handle:
        handle.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                _add_entry(archive, path.relative_to(staging).as_posix(), path.read_bytes())
            _add_entry(archive, "__main__.py", MAIN_SOURCE.encode())
    out.chmod(0o755)


def _add_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def _copy_tree(source: Path, target: Path, extra_left_out: Tuple[str, ...]) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*LEFT_OUT, *extra_left_out))


def _copy_dependency(name: str, dist: str, staging: Path) -> str:
    """Copy the installed package `name` (a directory or one module) and its licence files."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        raise BundleError(f"package {name!r} ({dist}) is not installed: pip install {dist}")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:
        _copy_tree(origin.parent, staging / name, LEFT_OUT_OF.get(name, ()))
    else:
        shutil.copy2(origin, staging / origin.name)
    distribution = importlib.metadata.distribution(dist)
    for file in distribution.files or ():
        if file.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            licences = staging / "licenses"
            licences.mkdir(exist_ok=True)
            shutil.copy2(file.locate(), licences / f"{dist}-{file.name}")
    return distribution.version


def _self_check(bundle: Path) -> None:
    check = subprocess.run([sys.executable, "-I", "-c", SELF_CHECK, str(bundle)],
                           capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        tail = "\n".join(check.stderr.strip().splitlines()[-5:])
        raise BundleError(f"{bundle}: the bundle does not import:\n{tail}")
