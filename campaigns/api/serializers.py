"""What the API reads and writes. Input serializers check only shapes (types); the rules live in
the services, so the API, the admin and the commands refuse the same things with the same words.
"""
from __future__ import annotations

from rest_framework import serializers

from campaigns.models import ArgSet, Campaign, Dataset, Task
from campaigns.services.exports import UNITS


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="what failed, where, and what is allowed")


class DatasetSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "name", "description", "store", "record_count", "owner", "created_at",
                  "updated_at"]
        read_only_fields = fields


class DatasetCreateSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="a slug, unique among all datasets")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class UploadReportSerializer(serializers.Serializer):
    read = serializers.IntegerField(help_text="good molecules read, new or not")
    added = serializers.IntegerField()
    already_present = serializers.IntegerField(help_text="in the dataset before, or twice in the file")
    skipped = serializers.IntegerField(help_text="broken molecules passed over (on_error=skip)")
    skipped_molecules = serializers.ListField(child=serializers.CharField(),
                                              help_text="'file:line: what', the first 100")
    record_count = serializers.IntegerField(help_text="the dataset's records now")


class ArgSetSerializer(serializers.ModelSerializer):
    class Meta:
        model = ArgSet
        fields = ["name", "parameters", "parsers", "keep_files"]
        read_only_fields = fields


class CampaignSerializer(serializers.ModelSerializer):
    dataset = serializers.SlugRelatedField(slug_field="name", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    arg_sets = ArgSetSerializer(many=True, read_only=True)

    class Meta:
        model = Campaign
        fields = ["id", "name", "dataset", "state", "function", "job_timeout", "max_attempts",
                  "output_key", "arg_sets", "query", "projection", "queue", "priority", "notes",
                  "owner", "created_at", "updated_at"]
        read_only_fields = fields


# --- the job definition document, for the schema; campaign_definition_parse checks it ------

class DefinitionConfigSerializer(serializers.Serializer):
    func_name = serializers.CharField(help_text="a task function, e.g. xtb.run, orca.sequential")
    job_timeout = serializers.IntegerField(required=False, help_text="seconds")
    max_attempts = serializers.IntegerField(required=False)
    args = serializers.ListField(child=serializers.DictField(), help_text=(
        "arg sets: {name, <the function's parameters>, parsers: {stream: [names]}, "
        "keep_files: {stream: pattern with {id}}}"))
    kwargs = serializers.DictField(help_text="{mongo_output_key: KEY}")


class DefinitionSubmitSerializer(serializers.Serializer):
    query = serializers.DictField(required=False, help_text="a MongoDB-style filter (docs/query.md)")
    projection = serializers.ListField(child=serializers.CharField(), required=False)
    queue = serializers.CharField(required=False, help_text='"name:priority", e.g. xtb:normal')


class DefinitionSerializer(serializers.Serializer):
    """The job definition file's document (examples/xtb_gfn2.yaml), as JSON."""

    campaign = serializers.CharField()
    dataset = serializers.CharField(required=False)
    notes = serializers.CharField(required=False)
    campaign_config = DefinitionConfigSerializer()
    submit = DefinitionSubmitSerializer(required=False)


class DefinitionFileSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="a job definition file (YAML)")


class MoleculeFileSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="a molecule file: .jsonl, .extxyz, .xyz, .sdf, .mol")


# --- life cycle -----------------------------------------------------------------------------

class LaunchSerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, allow_null=True, min_value=0, default=None,
                                     help_text="add at most this many new tasks")
    dry_run = serializers.BooleanField(required=False, default=False,
                                       help_text="count what would be added; write nothing")


class SubmitReportSerializer(serializers.Serializer):
    campaign = serializers.CharField()
    selected = serializers.IntegerField()
    added = serializers.IntegerField()
    already = serializers.IntegerField()
    queued = serializers.IntegerField()
    dry_run = serializers.BooleanField()
    state = serializers.CharField()


class StateSerializer(serializers.Serializer):
    campaign = serializers.CharField()
    state = serializers.CharField(help_text="the campaign's state afterwards")
    queued = serializers.IntegerField(required=False, help_text="jobs put in Redis at once")
    resubmitted = serializers.IntegerField(required=False, help_text="failed tasks made pending")
    removed_jobs = serializers.IntegerField(required=False, help_text="waiting jobs taken out of Redis")
    cancelled_tasks = serializers.IntegerField(required=False)


class FailureClassSerializer(serializers.Serializer):
    error_class = serializers.CharField()
    count = serializers.IntegerField()
    example = serializers.CharField()


class WorkerInfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    state = serializers.CharField()
    job_id = serializers.CharField(allow_null=True)


class StatusSerializer(serializers.Serializer):
    name = serializers.CharField()
    state = serializers.CharField()
    queue = serializers.CharField(help_text="the RQ queue, e.g. xtb:normal")
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="tasks by state")
    total = serializers.IntegerField()
    remaining = serializers.IntegerField(help_text="pending, queued and running tasks")
    rate_1m = serializers.FloatField(help_text="tasks finished per second, last minute")
    rate_10m = serializers.FloatField(help_text="tasks finished per second, last ten minutes")
    eta_s = serializers.FloatField(allow_null=True)
    failures = FailureClassSerializer(many=True)
    workers = WorkerInfoSerializer(many=True, allow_null=True, help_text="null: Redis did not answer")
    redis_used_memory = serializers.IntegerField(allow_null=True, help_text="bytes")
    redis_error = serializers.CharField(allow_blank=True)


class TaskSerializer(serializers.ModelSerializer):
    state = serializers.CharField(help_text="pending, queued, running, done, failed or cancelled")

    class Meta:
        model = Task
        fields = ["id", "record_id", "job_id", "state", "attempts", "error_class",
                  "error_message", "output_tail", "worker", "wall_s", "cpu_s", "created_at",
                  "queued_at", "finished_at"]
        read_only_fields = fields


class ResultsQuerySerializer(serializers.Serializer):
    arg_set = serializers.CharField(required=False, help_text="whose values (default: the first arg set)")
    units = serializers.ChoiceField(choices=list(UNITS), default="ev",
                                    help_text="ev: eV, eV/Å (default); au: Eh, Eh/bohr")
    key_prefix = serializers.ChoiceField(choices=["", "REF_"], default="", required=False,
                                         help_text="extxyz: REF_ for REF_energy, REF_forces")
    layout = serializers.ChoiceField(choices=["aimnet2", "torchani"], default="aimnet2",
                                     required=False, help_text="hdf5: the group layout")
