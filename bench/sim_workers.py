"""Simulated htportal workers: many asyncio Redis connections that do, per job, what a real
worker does on Redis, and sleep instead of running a program.

    .venv/bin/python bench/sim_workers.py --redis-url URL --workers 10000 --queue bench
                                          [--first 0] [--task-seconds 0.2 0.5] [--no-register]
                                          [--push-log FILE]

Each simulated worker has its own connection (its own redis.asyncio client and pool) and:
- registers as rq does (`rq:worker:NAME` with a TTL, renewed; the `rq:workers` sets), so the
  feeder's window (4 x live workers) sees it; --no-register leaves that out;
- BLPOPs the RQ queues of its worker queue in priority order (`rq:queue:Q:high`, `:normal`,
  `:low`), as rq's dequeue_any does for several queues;
- reads the job's `data` (HGET, zlib, RQ JSON: function, None, args, kwargs) for the record,
  the spec key and reply_to, and fetches the spec once per key (the worker's SpecCache);
- sleeps a uniform draw from --task-seconds;
- in one pipeline RPUSHes {job_id, result} onto reply_to, with a result document shaped like
  execute's (status ok, one entry per arg set of the spec, `values` {}), and sets the job hash's
  status to finished.

It does not write rq's StartedJobRegistry, execution or result keys: the collector reads only
the results list, and without them the reconciler sees the job as still queued, which it leaves
alone. Stdout gets one JSON line a second ({"connected", "busy", "jobs", "errors", ...}); on
SIGTERM/SIGINT it stops, prints a last line with "final": true, and with --push-log writes one
`JOB_ID UNIX_TIME` line per reply pushed (the time right after the pipeline returned).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional
from urllib.parse import urlparse

from redis.asyncio import Redis

PRIORITIES = ("high", "normal", "low")
# rq blocks for worker_ttl - 15 s; shorter here so that a stop or a TTL renewal is not delayed.
BLPOP_TIMEOUT_S = 30
WORKER_TTL_S = 420
RENEW_EVERY_S = 60
CONNECT_AT_ONCE = 200
REPORT_EVERY_S = 1.0


@dataclass
class Shared:
    """Counters of one simulator process, read by the reporter."""

    connected: int = 0
    busy: int = 0
    jobs: int = 0
    errors: int = 0
    last_error: str = ""
    pushed: List[tuple] = field(default_factory=list)  # (job id, unix time after the RPUSH)


def now_iso() -> str:
    """As execute._now: seconds resolution, UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def result_document(*, record_id: str, function: str, spec: dict, host: str,
                    started_at: str, wall_s: float) -> dict:
    """What execute.execute returns for a program-less task (noop, sleep) that went well."""
    names = [a.get("name") for a in spec.get("arg_sets") or [] if isinstance(a, dict)]
    part = {"status": "ok", "values": {}, "error": None, "wall_s": round(wall_s, 3),
            "cpu_s": 0.0, "exit_code": None, "host": host}
    return {"record_id": record_id, "function": function, "host": host, "status": "ok",
            "started_at": started_at, "finished_at": now_iso(),
            "arg_sets": {name: dict(part) for name in names}, "files": []}


class SimWorker:
    def __init__(self, *, name: str, url: str, queue: str, shared: Shared,
                 task_seconds: tuple, register: bool, log_pushes: bool) -> None:
        self.name = name
        self.key = f"rq:worker:{name}"
        self.queue_keys = [f"rq:queue:{queue}:{p}" for p in PRIORITIES]
        self.queue_names = [f"{queue}:{p}" for p in PRIORITIES]
        self.shared = shared
        self.task_seconds = task_seconds
        self.register = register
        self.log_pushes = log_pushes
        self.specs: Dict[str, dict] = {}
        self.rng = random.Random(name)
        self.renewed = 0.0
        # One client, one pool, one connection: a worker never has two commands in flight.
        self.conn = Redis.from_url(url, max_connections=1)

    async def start(self) -> None:
        await self.conn.ping()
        if self.register:
            await self._register()
        self.shared.connected += 1

    async def _register(self) -> None:
        now = datetime.now(timezone.utc).isoformat()
        async with self.conn.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, mapping={"birth": now, "last_heartbeat": now,
                                         "queues": ",".join(self.queue_names), "pid": os.getpid(),
                                         "hostname": socket.gethostname(), "state": "idle",
                                         "version": "sim"})
            pipe.expire(self.key, WORKER_TTL_S)
            pipe.sadd("rq:workers", self.key)
            for name in self.queue_names:
                pipe.sadd(f"rq:workers:{name}", self.key)
            await pipe.execute()
        self.renewed = time.monotonic()

    async def run(self) -> None:
        while True:
            if self.register and time.monotonic() - self.renewed > RENEW_EVERY_S:
                await self.conn.expire(self.key, WORKER_TTL_S)
                self.renewed = time.monotonic()
            popped = await self.conn.blpop(self.queue_keys, timeout=BLPOP_TIMEOUT_S)
            if popped is None:
                continue
            self.shared.busy += 1
            try:
                await self.job(popped[1].decode())
            except Exception as exc:  # a bad job must not end the simulated worker
                self.shared.errors += 1
                self.shared.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.shared.busy -= 1

    async def job(self, job_id: str) -> None:
        started, started_at = time.monotonic(), now_iso()
        job_key = f"rq:job:{job_id}"
        data = await self.conn.hget(job_key, "data")
        function, _, _, kwargs = json.loads(zlib.decompress(data))
        spec = await self.spec(kwargs["spec_key"])
        await asyncio.sleep(self.rng.uniform(*self.task_seconds))
        document = result_document(record_id=str(kwargs["record"]["id"]), function=function,
                                   spec=spec, host=self.name, started_at=started_at,
                                   wall_s=time.monotonic() - started)
        async with self.conn.pipeline(transaction=False) as pipe:
            pipe.rpush(kwargs["reply_to"], json.dumps({"job_id": job_id, "result": document}))
            pipe.hset(job_key, mapping={"status": "finished",
                                        "ended_at": datetime.now(timezone.utc).isoformat()})
            await pipe.execute()
        if self.log_pushes:
            self.shared.pushed.append((job_id, time.time()))
        self.shared.jobs += 1

    async def spec(self, key: str) -> dict:
        if key not in self.specs:
            self.specs[key] = json.loads(await self.conn.get(key))
        return self.specs[key]


async def report(shared: Shared, started: float, workers: int) -> None:
    while True:
        print(json.dumps({"t": round(time.monotonic() - started, 2), "workers": workers,
                          "connected": shared.connected, "busy": shared.busy,
                          "jobs": shared.jobs, "errors": shared.errors,
                          "last_error": shared.last_error}), flush=True)
        await asyncio.sleep(REPORT_EVERY_S)


async def main_async(args: argparse.Namespace) -> Shared:
    shared = Shared()
    started = time.monotonic()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host = socket.gethostname()
    workers = [SimWorker(name=f"sim.{host}.{args.first + i}", url=args.redis_url,
                         queue=args.queue, shared=shared, task_seconds=tuple(args.task_seconds),
                         register=not args.no_register, log_pushes=args.push_log is not None)
               for i in range(args.workers)]
    reporter = asyncio.create_task(report(shared, started, args.workers))
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def live(worker: SimWorker) -> None:
        async with gate:
            try:
                await worker.start()
            except Exception as exc:  # e.g. "max number of clients reached": count, give up
                shared.errors += 1
                shared.last_error = f"connect: {type(exc).__name__}: {exc}"
                return
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # lost its connection: counted, and this worker is gone
            shared.connected -= 1
            shared.errors += 1
            shared.last_error = f"run: {type(exc).__name__}: {exc}"

    tasks = [asyncio.create_task(live(worker)) for worker in workers]
    await stop.wait()
    for task in tasks + [reporter]:
        task.cancel()
    await asyncio.gather(*tasks, reporter, return_exceptions=True)
    print(json.dumps({"t": round(time.monotonic() - started, 2), "final": True,
                      "connected": shared.connected, "jobs": shared.jobs,
                      "errors": shared.errors, "last_error": shared.last_error}), flush=True)
    return shared


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="number of the first worker's name")
    parser.add_argument("--queue", required=True, help="worker queue, e.g. xtb")
    parser.add_argument("--task-seconds", type=float, nargs=2, default=(0.2, 0.5),
                        metavar=("MIN", "MAX"))
    parser.add_argument("--no-register", action="store_true",
                        help="do not register as rq workers (the feeder then sees none)")
    parser.add_argument("--push-log", help="write `JOB_ID UNIX_TIME` per reply here at the end")
    args = parser.parse_args(argv)
    if urlparse(args.redis_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"--redis-url must be on the loopback, not {urlparse(args.redis_url).hostname}")
    shared = asyncio.run(main_async(args))
    if args.push_log:
        with open(args.push_log, "w") as out:
            out.writelines(f"{job_id} {when:.6f}\n" for job_id, when in shared.pushed)


if __name__ == "__main__":
    main()
