"""Admin for worker pools (with a "check connection" action) and the scaler's events."""
from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from workers.models import ScalerEvent, WorkerPool
from workers.scaler.adapters import pool_connection_check
from workers.scaler.base import ScalerError
from workers.scaler.events import pools_with_last_event


@admin.action(description="Check connection (and the batch system's submit command)")
def check_connection(modeladmin, request, queryset):
    for pool in queryset:
        try:
            modeladmin.message_user(request, pool_connection_check(pool=pool), messages.SUCCESS)
        except ScalerError as exc:
            modeladmin.message_user(request, f"pool {pool.name}: {exc}", messages.ERROR)


@admin.register(WorkerPool)
class WorkerPoolAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "enabled", "host", "queues", "preference", "min_workers",
                    "max_workers", "last_event"]
    list_filter = ["enabled", "kind"]
    search_fields = ["name", "host", "queues"]
    actions = [check_connection]
    readonly_fields = ["consecutive_failures", "next_try_at", "broken_jobs", "created_at",
                       "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled", "queues"]}),
        ("Connection (slurm and condor pools)", {"fields": [
            "host", "port", "user", "key_path", "host_key", "work_dir", "command_env"]}),
        ("Workers", {"fields": ["redis_url", "setup", "template", "max_idle", "max_runtime",
                                "max_tasks"]}),
        ("HTCondor submit settings (condor pools; docs/condor.md)", {"fields": [
            "memory_per_worker_mb", "retry_memory_per_worker_mb", "disk_per_worker_mb",
            "container_image", "input_files", "project_name", "max_releases",
            "max_job_starts"]}),
        ("Limits", {"fields": ["preference", "min_workers", "max_workers", "workers_per_job",
                               "max_waiting_jobs", "removal_tries"]}),
        ("Scaler state", {"fields": readonly_fields}),
    ]

    def get_queryset(self, request):
        return pools_with_last_event(super().get_queryset(request))

    @admin.display(description="last event", ordering="last_event_time")
    def last_event(self, pool: WorkerPool) -> str:
        if not pool.last_event_kind:
            return "—"
        return format_html("{} <b>{}</b>: {}", pool.last_event_time.strftime("%Y-%m-%d %H:%M"),
                           pool.last_event_kind, pool.last_event_message[:120])


@admin.register(ScalerEvent)
class ScalerEventAdmin(admin.ModelAdmin):
    """Read-only: events are the scaler's record."""

    list_display = ["time", "pool", "kind", "message"]
    list_filter = ["kind", "pool", "time"]
    list_select_related = ["pool"]
    search_fields = ["message"]
    date_hierarchy = "time"
    readonly_fields = ["pool", "time", "kind", "message", "details"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
