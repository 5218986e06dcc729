"""Shared set-up for benches: a throwaway portal (database + redis-server) and fast test data.

    from bench._harness import portal_start
    portal = portal_start()             # before any Django import
    dataset = portal.dataset("waters", 50_000)
    ...
    portal.stop()

`portal_start` makes a temporary directory, starts a private redis-server (tests/servers.py),
points HTPORTAL_VAR_DIR and REDIS_URL there, chooses the database (below), runs django.setup()
and the migrations. `portal.env()` is the environment for child processes (workers, `manage.py
collect`) so they see the same database and Redis.

The database (`portal_start(db=...)`, a bench's `--db`):
- None (the default): DATABASE_URL when it is set, used as it is (not emptied, not dropped);
  otherwise a fresh SQLite file in the temporary directory.
- "sqlite": a fresh SQLite file in the temporary directory, whatever DATABASE_URL says.
- "postgres": a fresh database `htportal_bench_<pid>` made on the PostgreSQL server of
  DATABASE_URL when that is a PostgreSQL URL, else of HTPORTAL_BENCH_POSTGRES_URL, else
  postgres://postgres@127.0.0.1:5432/postgres; dropped by `stop()` unless kept.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import servers  # noqa: E402

INSERT_BATCH = 50_000
# 8 carbons and 16 hydrogens with random coordinates: about 1 kB of JSON, and random digits
# compress about as badly as real geometries do (rq zlib-compresses job data).
ELEMENTS = ["C"] * 8 + ["H"] * 16


def record_input(rng: random.Random, number: int) -> dict:
    """A molecule input of about 1 kB of JSON."""
    return json.loads(record_input_json(rng, number))


def record_input_json(rng: random.Random, number: int) -> str:
    """record_input as JSON text, made from a pool of random coordinate triples: twenty times
    faster than building and dumping the dict, which made inserting 1M records take minutes."""
    triples = ", ".join(rng.choices(_triples(), k=len(ELEMENTS)))
    return (f'{{"elements": {_ELEMENTS_JSON}, "coordinates": [{triples}], "charge": 0, '
            f'"multiplicity": 1, "tag": {number}}}')


_ELEMENTS_JSON = json.dumps(ELEMENTS)
_TRIPLE_POOL: List[str] = []


def _triples() -> List[str]:
    if not _TRIPLE_POOL:
        rng = random.Random(0)
        _TRIPLE_POOL.extend(json.dumps([round(rng.uniform(-4.0, 4.0), 6) for _ in range(3)])
                            for _ in range(1 << 16))
    return _TRIPLE_POOL


def record_id(number: int) -> str:
    return f"mol-{number:07d}"


class Ticker:
    """Prints `what done/total (rate/s, eta)` at most every `every` seconds."""

    def __init__(self, what: str, total: int, every: float = 3.0) -> None:
        self.what, self.total, self.every = what, total, every
        self.started = self.last = time.monotonic()

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        print(f"  {self.what} {done:,}/{self.total:,} ({rate:,.0f}/s, eta {eta:.0f}s){extra}",
              flush=True)


DB_CHOICES = ("sqlite", "postgres")
POSTGRES_DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"


@dataclass
class Portal:
    directory: Path
    redis: servers.RedisServer
    database: Optional[Path]  # the SQLite file; None on another database
    database_url: str = ""
    # (server URL, database name) of a PostgreSQL database portal_start made: dropped by stop()
    made_database: Optional[Tuple[str, str]] = None

    @property
    def vendor(self) -> str:
        """"sqlite" or "postgresql" (Django's connection.vendor)."""
        return "sqlite" if self.database_url.startswith("sqlite") else "postgresql"

    @property
    def url(self) -> str:
        return self.redis.url

    def connection(self):
        from redis import Redis
        return Redis.from_url(self.redis.url)

    def env(self, **extra: str) -> Dict[str, str]:
        """Environment for a child process on this portal (log times in UTC)."""
        return {**os.environ, "DJANGO_SETTINGS_MODULE": "htportal.settings",
                "HTPORTAL_VAR_DIR": str(self.directory / "var"),
                "DATABASE_URL": self.database_url, "REDIS_URL": self.redis.url,
                "HTPORTAL_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "TZ": "UTC", **extra}

    def dataset(self, name: str, count: int, *, seed: int = 1, quiet: bool = False):
        """A SQL dataset of `count` records mol-0000000... of ~1 kB inputs, inserted with one
        executemany per 50,000 rows (as the import service's fast path, without its reader)."""
        from campaigns.models import Dataset
        dataset = Dataset.objects.create(name=name)
        ticker = Ticker(f"records {name}: inserted", count)
        rng = random.Random(seed)
        done = 0
        while done < count:
            size = min(INSERT_BATCH, count - done)
            records_insert(dataset_id=dataset.pk, rows=[
                (record_id(number), record_input_json(rng, number))
                for number in range(done, done + size)])
            done += size
            if not quiet:
                ticker.update(done)
        Dataset.objects.filter(pk=dataset.pk).update(record_count=count)
        return dataset

    def stop(self, *, keep: bool = False) -> None:
        """Stop redis-server; remove the database and logs unless `keep`."""
        self.redis.stop()
        if self.made_database and not keep:
            postgres_drop(*self.made_database)
        if not keep:
            shutil.rmtree(self.directory, ignore_errors=True)
        shutil.rmtree(self.redis.directory, ignore_errors=True)


def records_insert(*, dataset_id: int, rows: List[Tuple[str, str]]) -> None:
    """INSERT (record id, input JSON text) rows in one transaction and one executemany."""
    from django.db import connection, transaction
    from django.utils import timezone

    from campaigns.models import Record

    fields = {name: Record._meta.get_field(name) for name in
              ("dataset", "record_id", "input", "results", "created_at", "updated_at")}
    now = fields["created_at"].get_db_prep_save(timezone.now(), connection)
    empty = fields["results"].get_db_prep_save({}, connection)
    quote = connection.ops.quote_name
    sql = (f"INSERT INTO {quote(Record._meta.db_table)} "
           f"({', '.join(quote(f.column) for f in fields.values())}) "
           f"VALUES ({', '.join(['%s'] * len(fields))})")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, [(dataset_id, rid, text, empty, now, now) for rid, text in rows])


def record_inputs(dataset, limit: Optional[int] = None) -> Iterator[Tuple[str, dict]]:
    """(record id, input) of the dataset in id order, as the feeder would send them."""
    from campaigns.models import Record
    rows = (Record.objects.filter(dataset=dataset).order_by("record_id")
            .values_list("record_id", "input"))
    return iter(rows[:limit] if limit is not None else rows.iterator(chunk_size=5000))


def noop_campaign(name: str, dataset, *, queue: str):
    """A draft `noop` campaign with one arg set on `queue` (priority normal)."""
    from campaigns.models import ArgSet, Campaign
    campaign = Campaign.objects.create(name=name, dataset=dataset, function="noop",
                                       output_key="out", queue=queue, priority="normal",
                                       job_timeout=300)
    ArgSet.objects.create(campaign=campaign, name="a", parameters={}, position=0)
    return campaign


def postgres_create(server_url: str, name: str) -> str:
    """CREATE DATABASE `name` on the server of `server_url`; return the new database's URL."""
    import dj_database_url
    import psycopg
    from psycopg import sql

    with psycopg.connect(_postgres_dsn(server_url), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = dj_database_url.parse(server_url)
    auth = parts["USER"] + (f":{parts['PASSWORD']}" if parts.get("PASSWORD") else "")
    return (f"postgres://{auth}@{parts['HOST'] or '127.0.0.1'}:{parts['PORT'] or 5432}/{name}")


def postgres_drop(server_url: str, name: str) -> None:
    """DROP DATABASE `name` (WITH FORCE: a child's connection may linger)."""
    import psycopg
    from psycopg import sql
    try:
        from django.db import connections
        connections.close_all()
    except Exception:  # Django not set up: nothing of ours is connected
        pass
    with psycopg.connect(_postgres_dsn(server_url), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _postgres_dsn(url: str) -> str:
    import dj_database_url
    parts = dj_database_url.parse(url)
    return " ".join(f"{key}={value}" for key, value in (
        ("host", parts["HOST"] or "127.0.0.1"), ("port", parts["PORT"] or 5432),
        ("user", parts["USER"]), ("password", parts.get("PASSWORD")),
        ("dbname", parts["NAME"] or "postgres")) if value)


def database_choose(db: Optional[str], directory: Path):
    """(DATABASE_URL, SQLite path or None, (server URL, name) of a database made or None)."""
    given = os.environ.get("DATABASE_URL", "")
    sqlite_path = directory / "var" / "htportal.sqlite3"
    if db is None:
        if given:
            return given, (_sqlite_path(given) if given.startswith("sqlite") else None), None
        db = "sqlite"
    if db == "sqlite":
        return f"sqlite:///{sqlite_path}", sqlite_path, None
    if db != "postgres":
        raise SystemExit(f"--db {db!r}: choose one of {', '.join(DB_CHOICES)}")
    server = (given if given.startswith(("postgres://", "postgresql://"))
              else os.environ.get("HTPORTAL_BENCH_POSTGRES_URL", POSTGRES_DEFAULT_URL))
    name = f"htportal_bench_{os.getpid()}"
    try:
        url = postgres_create(server, name)
    except Exception as exc:
        raise SystemExit(f"--db postgres: could not create database {name}: {exc}") from None
    return url, None, (server, name)


def _sqlite_path(url: str) -> Optional[Path]:
    import dj_database_url
    name = dj_database_url.parse(url)["NAME"]
    return Path(name) if name and name != ":memory:" else None


def portal_start(*, log_level: str = "WARNING", db: Optional[str] = None) -> Portal:
    """Start redis-server, choose the database (see the module's docstring), set Django up."""
    directory = Path(tempfile.mkdtemp(prefix="htportal-bench-"))
    (directory / "var").mkdir()
    redis = servers.start_redis()
    try:
        database_url, database, made = database_choose(db, directory)
    except BaseException:
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    os.environ.update({"DJANGO_SETTINGS_MODULE": "htportal.settings",
                       "HTPORTAL_VAR_DIR": str(directory / "var"),
                       "DATABASE_URL": database_url, "REDIS_URL": redis.url,
                       "HTPORTAL_LOG_LEVEL": log_level})
    portal = Portal(directory=directory, redis=redis, database=database,
                    database_url=database_url, made_database=made)
    try:
        import django
        from django.core.management import call_command
        django.setup()
        call_command("migrate", verbosity=0)
    except BaseException:
        portal.stop()
        raise
    return portal
