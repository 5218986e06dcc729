"""The bundle and the env file reach a pool's host over SFTP only when they changed."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from workers.scaler.bundle_upload import (BUNDLE_NAME, bundle_build_once,
                                          env_file_text, pool_files_ensure)

PASSWORD = "s3cret-Pa55word"
REDIS_URL = f"redis://:{PASSWORD}@redis.example.org:6379/0"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return bundle_build_once(out=tmp_path_factory.mktemp("bundle") / BUNDLE_NAME)


def test_it_uploads_once_and_then_nothing(remote, work_dir, bundle):
    first = pool_files_ensure(remote=remote, work_dir=work_dir, redis_url=REDIS_URL,
                              bundle=bundle)
    assert first.uploaded == ("bundle", "env file")
    assert first.work_dir == str(Path(work_dir).resolve())
    assert first.bundle == f"{first.work_dir}/{BUNDLE_NAME}"
    assert Path(first.log_dir).is_dir()
    assert hashlib.sha256(Path(first.bundle).read_bytes()).hexdigest() == bundle.sha256
    bundle_mtime = os.stat(first.bundle).st_mtime_ns

    second = pool_files_ensure(remote=remote, work_dir=work_dir, redis_url=REDIS_URL,
                               bundle=bundle)
    assert second.uploaded == ()
    assert os.stat(first.bundle).st_mtime_ns == bundle_mtime


def test_the_env_file_is_0600_and_the_password_is_on_no_command_line(remote, work_dir, bundle):
    files = pool_files_ensure(remote=remote, work_dir=work_dir, redis_url=REDIS_URL,
                              bundle=bundle)
    mode = stat.S_IMODE(os.stat(files.env_file).st_mode)
    assert mode == 0o600, oct(mode)
    assert Path(files.env_file).read_text() == env_file_text(redis_url=REDIS_URL)
    assert remote.commands
    assert not [command for command in remote.commands if PASSWORD in command]
    # What the batch script does with it: the worker sees the URL in its environment.
    shown = subprocess.run(["sh", "-c", f'set -a; . "{files.env_file}"; set +a; '
                                        f'echo "$HTPORTAL_REDIS_URL"'],
                           capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == REDIS_URL


def test_a_new_redis_url_rewrites_only_the_env_file(remote, work_dir, bundle):
    pool_files_ensure(remote=remote, work_dir=work_dir, redis_url=REDIS_URL, bundle=bundle)
    again = pool_files_ensure(remote=remote, work_dir=work_dir, bundle=bundle,
                              redis_url="redis://other:6379/0?a=1&b=2")
    assert again.uploaded == ("env file",)


def test_a_changed_remote_bundle_is_replaced(remote, work_dir, bundle):
    files = pool_files_ensure(remote=remote, work_dir=work_dir, redis_url=REDIS_URL,
                              bundle=bundle)
    Path(files.bundle).write_bytes(b"truncated")
    again = pool_files_ensure(remote=remote, work_dir=work_dir, redis_url=REDIS_URL,
                              bundle=bundle)
    assert again.uploaded == ("bundle",)
    assert hashlib.sha256(Path(files.bundle).read_bytes()).hexdigest() == bundle.sha256


def test_the_bundle_is_built_once_per_process(bundle):
    assert bundle_build_once(out=bundle.path) is bundle
