"""Datasets of molecule records, and campaigns that compute something for each record."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from campaigns.errors import DefinitionError
from campaigns.services import definition_schema as schema
from workers.runtime import registry


def _checked(instance: models.Model, checks: dict) -> None:
    """Run schema checks on fields, store their canonical values, raise all failures at once."""
    errors = {}
    for field, check in checks.items():
        try:
            setattr(instance, field, check(getattr(instance, field)))
        except DefinitionError as exc:
            errors[field] = str(exc)
    if errors:
        raise ValidationError(errors)


class Dataset(models.Model):
    class Store(models.TextChoices):
        SQL = "sql", "SQL tables (the portal's database)"
        MONGODB = "mongodb", "MongoDB collection"

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    store = models.CharField(max_length=16, choices=Store.choices, default=Store.SQL)
    mongo_uri = models.CharField("MongoDB URI", max_length=500, blank=True)
    mongo_database = models.CharField("MongoDB database", max_length=100, blank=True)
    mongo_collection = models.CharField("MongoDB collection", max_length=100, blank=True)
    record_count = models.PositiveBigIntegerField(default=0, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="datasets",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.store == self.Store.MONGODB:
            missing = [label for label, value in (
                ("MongoDB URI", self.mongo_uri),
                ("MongoDB database", self.mongo_database),
                ("MongoDB collection", self.mongo_collection),
            ) if not value]
            if missing:
                raise ValidationError(f"a MongoDB store needs: {', '.join(missing)}")


class Record(models.Model):
    """One molecule of a SQL-stored dataset.

    `input` holds elements, coordinates (Å), charge, multiplicity and any extra fields;
    `results` is one document, so results[output_key][arg_set] holds one result.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="records")
    record_id = models.CharField("id", max_length=200)
    input = models.JSONField(default=dict)
    results = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "record_id"], name="record_id_unique_in_dataset"),
        ]
        ordering = ["dataset", "id"]

    def __str__(self) -> str:
        return f"{self.dataset_id}:{self.record_id}"


class Campaign(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        PAUSED = "paused"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Priority(models.TextChoices):
        HIGH = "high"
        NORMAL = "normal"
        LOW = "low"

    name = models.SlugField(max_length=schema.NAME_MAX_LENGTH, unique=True)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="campaigns")
    function = models.CharField(max_length=100, choices=registry.task_choices,
                                help_text="a task function of the registry")
    job_timeout = models.PositiveIntegerField("job timeout (s)", default=schema.DEFAULT_JOB_TIMEOUT,
                                              validators=[MinValueValidator(1)])
    output_key = models.SlugField(max_length=schema.NAME_MAX_LENGTH,
                                  help_text="results go to record[output key][arg set name]")
    queue = models.CharField(
        max_length=schema.NAME_MAX_LENGTH, default=schema.DEFAULT_QUEUE,
        validators=[RegexValidator(schema.QUEUE_PATTERN, f"allowed: {schema.QUEUE_RULE}")],
    )
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    max_attempts = models.PositiveSmallIntegerField(default=schema.DEFAULT_MAX_ATTEMPTS,
                                                    validators=[MinValueValidator(1)])
    query = models.JSONField("selection query", default=dict, blank=True,
                             help_text='a MongoDB-style filter, e.g. {"wb97mv.wb97md3bj": null}')
    projection = models.JSONField(default=list, blank=True, help_text="a list of record field names")
    state = models.CharField(max_length=10, choices=State.choices, default=State.DRAFT)
    # Bumped whenever the arg sets change, so that job ids (and the spec key in Redis) of the
    # old arg sets are never mistaken for the new ones.
    spec_version = models.PositiveIntegerField(default=1, editable=False)
    # Set by staff only: program inputs of a trusted campaign may use directives that start other
    # programs or read paths outside the scratch directory (campaigns.services.input_policy).
    trusted = models.BooleanField(
        default=False,
        help_text="staff only: allow program directives that start other programs or reach "
                  "outside the task's scratch directory")
    notes = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="campaigns",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue_spec(self) -> str:
        """The queue as a job definition file writes it: "name:priority"."""
        return schema.format_queue(self.queue, self.priority)

    def clean(self) -> None:
        _checked(self, {
            # An empty function already failed as a blank field; one error is enough.
            "function": lambda value: schema.check_task_name(value) if value else value,
            "query": schema.check_query,
            "projection": schema.check_projection,
        })


class ArgSet(models.Model):
    """One run of the campaign's function per record: its parameters, parsers and kept files.

    parameters: ORCA {"route": text}; XTB {"method", "task", "charge", "uhf", "flags"};
    Vina {"receptor": {"name", "content"}, "center", "size", "exhaustiveness", "num_modes", "cpu",
    "seed"}; the full rules are campaigns.services.definition_schema.PARAMETERS.
    parsers: {stream or file name: [parser names]}; keep_files: {stream or file name: pattern
    with {id}}.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="arg_sets")
    position = models.PositiveIntegerField(default=0)
    name = models.SlugField(max_length=schema.NAME_MAX_LENGTH)
    parameters = models.JSONField(default=dict, blank=True)
    parsers = models.JSONField(default=dict, blank=True)
    keep_files = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["campaign", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "name"], name="arg_set_name_unique_in_campaign"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}/{self.name}"

    def clean(self) -> None:
        function = self._campaign_function()
        trusted = self._campaign_trusted()
        _checked(self, {
            # Parameters depend on the function; without a valid one, its own error is enough.
            "parameters": lambda value: (schema.check_parameters(function, value, trusted=trusted)
                                         if function else value),
            "parsers": schema.check_parsers,
            "keep_files": schema.check_keep_files,
        })

    def _campaign_function(self) -> str:
        try:
            function = self.campaign.function
        except Campaign.DoesNotExist:
            return ""
        return function if function in registry.task_names() else ""

    def _campaign_trusted(self) -> bool:
        # The admin's inline forms see the campaign as the form is about to save it, so
        # clearing the flag re-checks the arg sets under the untrusted rules.
        try:
            return bool(self.campaign.trusted)
        except Campaign.DoesNotExist:
            return False


class Task(models.Model):
    """The ledger: one row per (campaign, record), the source of truth for what is to do.

    Redis holds only a window of queued jobs; a Redis that restarts empty is refilled from here.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="tasks")
    record_id = models.CharField(max_length=200)
    job_id = models.CharField(max_length=100, unique=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # One more each time the feeder puts the task's job in Redis: the attempt id a job carries
    # (campaigns.attempts) names its delivery, and only that delivery's result is applied.
    delivery = models.PositiveIntegerField(default=0)
    # How often its job vanished from Redis (a restart that lost everything) while out: each time
    # it goes back to pending with no attempt counted, up to settings.RECONCILE_LOST_LIMIT.
    lost = models.PositiveSmallIntegerField(default=0)
    host = models.CharField(max_length=200, blank=True,
                            help_text="the host that sent the last result")
    # Results that said the node's environment is broken ("fault": "worker"): counted apart
    # from attempts, the task fails with WorkerFault after WORKER_FAULT_LIMIT of them.
    worker_faults = models.PositiveSmallIntegerField(default=0)
    error_class = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    output_tail = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    wall_s = models.FloatField(null=True, blank=True)
    cpu_s = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["campaign", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "record_id"], name="one_task_per_record"),
        ]
        indexes = [
            models.Index(fields=["campaign", "state"], name="task_campaign_state"),
            # The feeder's keyset read: pending tasks of a campaign after id N, in id order.
            models.Index(fields=["campaign", "state", "id"], name="task_campaign_state_id"),
            models.Index(fields=["state", "finished_at"], name="task_state_finished"),
            # The dashboard's counts and per-minute series read only this index (covering).
            models.Index(fields=["campaign", "state", "finished_at"],
                         name="task_campaign_state_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id}:{self.record_id} ({self.state})"


class TaskMinute(models.Model):
    """How many of a campaign's tasks became done, and failed for good, in one minute (UTC).

    A history of completions, kept by campaigns.services.rollups in the transactions that write
    the ledger; the dashboard's per-minute series reads it instead of grouping the ledger.
    """

    # No index of its own: the unique (campaign, minute) index serves every lookup by campaign,
    # the series' "this campaign's minutes in order" among them.
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="task_minutes",
                                 db_index=False)
    minute = models.DateTimeField()
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["campaign", "minute"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "minute"], name="one_task_minute"),
        ]

    def __str__(self) -> str:
        return (f"{self.campaign_id}@{self.minute:%Y-%m-%d %H:%M}: {self.done} done, "
                f"{self.failed} failed")


class PortalJob(models.Model):
    """A long operation of the portal's own (an upload's import, a launch) run by the portal's
    rqworker on its own queue (campaigns.portal_jobs_rq); the client polls /api/jobs/ID/.

    Live progress and the heartbeat sit in Redis while it runs (campaigns.services.portal_jobs:
    an abort-mode import holds one database transaction, so a progress UPDATE would be invisible
    until it ends); this row keeps the outcome: state, counts, message and report.
    """

    class Kind(models.TextChoices):
        RECORDS_IMPORT = "records_import", "import molecules into a dataset"
        CAMPAIGN_LAUNCH = "campaign_launch", "launch a campaign"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="portal_jobs")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    # What to work on: ids, options and names only (JSON), never objects.
    arguments = models.JSONField(default=dict)
    done = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    report = models.JSONField(default=dict, blank=True)
    path = models.CharField(max_length=500, blank=True,
                            help_text="the uploaded file the job reads (deleted when it ends)")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["owner", "state"], name="portal_job_owner_state")]

    def __str__(self) -> str:
        return f"portal job {self.pk} ({self.kind}, {self.state})"

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)
