"""Worker pools (where and how many workers the scaler starts) and the scaler's event log."""
from __future__ import annotations

import re
from typing import Dict, List

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from campaigns.services.definition_schema import QUEUE_PATTERN, QUEUE_RULE

_QUEUE_NAME = QUEUE_PATTERN.removeprefix("^").removesuffix("\\Z")
_QUEUE_LIST = RegexValidator(rf"^\s*{_QUEUE_NAME}(\s+{_QUEUE_NAME})*\s*\Z",
                             f"queue names separated by spaces, each {QUEUE_RULE}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class WorkerPool(models.Model):
    """One place workers run: this machine, a SLURM cluster or an HTCondor submit host.

    The scaler keeps between min_workers and max_workers workers serving `queues`, as the
    backlog asks, in batch jobs of workers_per_job workers, with at most max_waiting_jobs batch
    jobs waiting in the batch queue (docs/scaler.md).
    """

    class Kind(models.TextChoices):
        LOCAL = "local", "this machine"
        SLURM = "slurm", "SLURM (sbatch over SSH)"
        CONDOR = "condor", "HTCondor (condor_submit over SSH)"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.SLURM)
    enabled = models.BooleanField(default=True)
    # Connection (slurm and condor pools)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(default=22, validators=[MaxValueValidator(65535)])
    user = models.CharField(max_length=100, blank=True)
    key_path = models.CharField(
        "private key path", max_length=500, blank=True,
        help_text="a private key file on the portal's machine; blank: use the SSH agent")
    host_key = models.TextField(
        "host public key", blank=True,
        help_text="pinned: 'ssh-ed25519 AAAA...' (the host's .pub or a line of ssh-keyscan); "
                  "an unknown or changed key refuses to connect")
    work_dir = models.CharField(
        "remote work directory", max_length=500, blank=True,
        help_text="absolute or relative to the home directory; blank: htportal/<pool name> "
                  "(a local pool: var/workers/<pool name>)")
    redis_url = models.CharField(
        "Redis URL for the workers", max_length=500, blank=True,
        help_text="as the workers must reach Redis (password included); blank: the portal's "
                  "REDIS_URL. Written only to a 0600 file in the work directory")
    command_env = models.TextField(
        "environment of batch commands", blank=True,
        help_text="NAME=value lines set for sbatch/squeue/condor_* (e.g. "
                  "CONDOR_CONFIG=/etc/condor/alt.conf); on the command line, so no secrets")
    # What runs there
    template = models.TextField(
        "batch script / submit description", blank=True,
        help_text="placeholders {bundle} {env_file} {queues} {max_idle} {max_runtime} "
                  "{max_tasks} {jobs} {jobs-1} {workers_per_job} {work_dir} {log_dir} {setup}; "
                  "blank: the kind's default")
    queues = models.CharField(max_length=500, default="default", validators=[_QUEUE_LIST],
                              help_text="queues served, separated by spaces (e.g. 'xtb orca')")
    setup = models.TextField("setup commands", blank=True,
                             help_text="shell lines run before the workers: module load, "
                                       "conda activate, export PATH=/opt/orca:$PATH")
    max_idle = models.PositiveIntegerField("worker --max-idle (s)", default=600,
                                           validators=[MinValueValidator(1)])
    max_runtime = models.PositiveIntegerField("worker --max-runtime (s)", default=4 * 3600,
                                              validators=[MinValueValidator(1)])
    max_tasks = models.PositiveIntegerField("worker --max-tasks", default=100_000,
                                            validators=[MinValueValidator(1)])
    # HTCondor submit settings (docs/condor.md; used by the default condor template)
    memory_per_worker_mb = models.PositiveIntegerField(
        "memory per worker (MB)", default=1024, validators=[MinValueValidator(1)],
        help_text="condor: request_memory = this × workers per job")
    retry_memory_per_worker_mb = models.PositiveIntegerField(
        "retry memory per worker (MB)", default=0,
        help_text="condor: retry_request_memory = this × workers per job, for the run after "
                  "one that used more than request_memory; 0: no retry_request_memory line. "
                  "More than the memory per worker")
    disk_per_worker_mb = models.PositiveIntegerField(
        "disk per worker (MB)", default=1024, validators=[MinValueValidator(1)],
        help_text="condor: request_disk = this × workers per job (bundle, inputs, scratch)")
    container_image = models.CharField(
        max_length=500, blank=True,
        help_text="condor: container_image, written without quotes: "
                  "osdf:///ospool/ap40/data/USER/htportal-v1.sif, a /cvmfs/... path or "
                  "docker://...; blank: the node's own environment")
    input_files = models.TextField(
        "extra input files", blank=True,
        help_text="condor: more transfer_input_files, one a line (software through OSDF: "
                  "osdf:///ospool/ap40/data/USER/orca-6.tar.gz); /cvmfs paths need no transfer")
    project_name = models.CharField(
        "OSPool project", max_length=100, blank=True,
        help_text="condor: +ProjectName for the job's accounting; blank: no line (the "
                  "access point's default project)")
    max_releases = models.PositiveIntegerField(
        "releases after transient holds", default=3,
        help_text="condor: periodic_release lets a job held for a transient cause (file "
                  "transfer, memory, container test) run again while NumHolds is at most this")
    max_job_starts = models.PositiveIntegerField(
        "most job starts", default=10, validators=[MinValueValidator(1)],
        help_text="condor: periodic_remove removes a job started more often than this "
                  "(evictions count); held jobs are removed after an hour")
    # Limits
    preference = models.PositiveIntegerField(
        default=100,
        help_text="pools sharing a queue are filled in this order, lowest first, each up to "
                  "its max workers (e.g. local 10, a cluster 20, the OSPool 30)")
    min_workers = models.PositiveIntegerField(default=0)
    max_workers = models.PositiveIntegerField(default=10)
    workers_per_job = models.PositiveIntegerField("workers per batch job", default=1,
                                                  validators=[MinValueValidator(1)])
    max_waiting_jobs = models.PositiveIntegerField(
        "most batch jobs waiting", default=10,
        help_text="batch jobs allowed to wait in the batch queue at once")
    removal_tries = models.PositiveIntegerField(
        "tries before removal", default=3, validators=[MinValueValidator(1)],
        help_text="a held or failed batch job is removed once seen this many scaler steps")
    # The scaler's own state
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    next_try_at = models.DateTimeField(null=True, blank=True, editable=False)
    broken_jobs = models.JSONField(default=dict, blank=True, editable=False,
                                   help_text="held/failed job id -> steps it was seen in")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["preference", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue_names(self) -> List[str]:
        return self.queues.split()

    @property
    def uses_ssh(self) -> bool:
        return self.kind != self.Kind.LOCAL

    @property
    def address(self) -> str:
        """user@host:port, or "this machine"."""
        return f"{self.user}@{self.host}:{self.port}" if self.uses_ssh else "this machine"

    @property
    def command_env_dict(self) -> Dict[str, str]:
        """command_env as {NAME: value}; ValueError names a line that is not NAME=value."""
        env = {}
        for line in self.command_env.splitlines():
            if not line.strip():
                continue
            name, sep, value = line.strip().partition("=")
            if not sep or not _ENV_NAME.match(name):
                raise ValueError(f"environment line {line.strip()!r} is not NAME=value")
            env[name] = value
        return env

    def clean(self) -> None:
        from workers.scaler.ssh import host_key_parse
        from workers.scaler.templates import TemplateError, template_check

        errors = {}
        if self.min_workers > self.max_workers:
            errors["min_workers"] = (f"min workers ({self.min_workers}) is more than max "
                                     f"workers ({self.max_workers})")
        if self.uses_ssh:
            for field in ("host", "user", "host_key"):
                if not getattr(self, field):
                    errors[field] = f"a {self.kind} pool needs this (it is reached over SSH)"
            if self.host_key:
                try:
                    host_key_parse(self.host_key)
                except ValueError as exc:
                    errors["host_key"] = str(exc)
        try:
            self.command_env_dict
        except ValueError as exc:
            errors["command_env"] = str(exc)
        try:
            template_check(self.template)
        except TemplateError as exc:
            errors["template"] = str(exc)
        if self.kind == self.Kind.CONDOR:
            from workers.scaler.condor import condor_settings_problems
            errors.update(condor_settings_problems(pool=self))
        if errors:
            raise ValidationError(errors)


class ScalerEvent(models.Model):
    """What the scaler did or met for one pool: a submission, a removal, an error, a decision."""

    class Kind(models.TextChoices):
        SUBMIT = "submit"
        REMOVE = "remove"
        ERROR = "error"
        DECISION = "decision"

    pool = models.ForeignKey(WorkerPool, on_delete=models.CASCADE, related_name="events")
    time = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [models.Index(fields=["pool", "-time"], name="scaler_event_pool_time")]

    def __str__(self) -> str:
        return f"{self.pool_id} {self.kind}: {self.message[:60]}"
