"""Datasets of molecule records, and campaigns that compute something for each record."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from workers.runtime import registry


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

    class Priority(models.TextChoices):
        HIGH = "high"
        NORMAL = "normal"
        LOW = "low"

    name = models.SlugField(max_length=100, unique=True)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="campaigns")
    function = models.CharField(max_length=100, choices=registry.task_choices)
    job_timeout = models.PositiveIntegerField("job timeout (s)", default=3600,
                                              validators=[MinValueValidator(1)])
    output_key = models.CharField(max_length=100)
    queue = models.CharField(max_length=100, default="default")
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    max_attempts = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1)])
    query = models.JSONField("selection query", default=dict, blank=True)
    projection = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.DRAFT)
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

    def clean(self) -> None:
        try:
            self.function = registry.canonical_task_name(self.function)
        except registry.UnknownNameError as exc:
            raise ValidationError({"function": str(exc)}) from None


class ArgSet(models.Model):
    """One run of the campaign's function per record: its parameters, parsers and kept files.

    parameters: ORCA {"route": text}; XTB {"method", "task", "charge", "uhf", "flags"};
    Vina {"receptor": {"name", "content"}, "center", "size", "exhaustiveness", "seed"}.
    parsers: {stream or file name: [parser names]}; keep_files: {stream or file name: pattern
    with {id}}.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="arg_sets")
    position = models.PositiveIntegerField(default=0)
    name = models.SlugField(max_length=100)
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
        if not isinstance(self.parsers, dict):
            raise ValidationError({"parsers": "must map a stream or file name to a list of parser names"})
        for stream, names in self.parsers.items():
            if not isinstance(names, list):
                raise ValidationError({"parsers": f"{stream}: must be a list of parser names"})
            for name in names:
                try:
                    registry.parser_entry(name)
                except registry.UnknownNameError as exc:
                    raise ValidationError({"parsers": f"{stream}: {exc}"}) from None
        if not isinstance(self.keep_files, dict) or not all(
            isinstance(v, str) and v for v in self.keep_files.values()
        ):
            raise ValidationError({"keep_files": "must map a stream or file name to a name pattern"})
