"""Admin for datasets and records: read-mostly, and quick on tables of millions of records."""
from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from campaigns.models import Dataset, Record

JSON_PREVIEW_CHARS = 120


def pretty_json(value) -> str:
    """JSON indented for reading, in a <pre> block."""
    return format_html('<pre style="margin:0; white-space:pre-wrap">{}</pre>',
                       json.dumps(value, indent=2, ensure_ascii=False))


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "store", "record_count", "updated_at"]
    list_filter = ["store", "updated_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["record_count", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "owner", "store", "record_count"]}),
        ("MongoDB store", {"fields": ["mongo_uri", "mongo_database", "mongo_collection"],
                           "classes": ["collapse"]}),
        ("Dates", {"fields": ["created_at", "updated_at"]}),
    ]


@admin.register(Record)
class RecordAdmin(admin.ModelAdmin):
    list_display = ["record_id", "dataset", "formula", "results_preview", "updated_at"]
    list_filter = ["dataset"]
    list_select_related = ["dataset"]
    # An exact id lookup uses the (dataset, record_id) index; a substring search would scan.
    search_fields = ["=record_id"]
    search_help_text = "exact record id"
    # COUNT(*) over millions of rows on every page is the slow part of a changelist.
    show_full_result_count = False
    list_per_page = 50
    raw_id_fields = ["dataset"]
    fields = ["dataset", "record_id", "input_pretty", "results_pretty", "created_at",
              "updated_at"]
    readonly_fields = ["input_pretty", "results_pretty", "created_at", "updated_at"]

    def get_fields(self, request, obj=None):
        if obj is None:  # adding: the JSON fields are edited as text
            return ["dataset", "record_id", "input", "results"]
        return self.fields

    def get_readonly_fields(self, request, obj=None):
        # A record's identity is fixed once it exists: campaigns and results point at it.
        if obj is None:
            return []
        return ["dataset", "record_id", *self.readonly_fields]

    @admin.display(description="formula")
    def formula(self, record: Record) -> str:
        elements = record.input.get("elements") if isinstance(record.input, dict) else None
        if not isinstance(elements, list):
            return "-"
        counts: dict[str, int] = {}
        for element in elements:
            counts[element] = counts.get(element, 0) + 1
        return "".join(f"{e}{n if n > 1 else ''}" for e, n in counts.items())

    @admin.display(description="results")
    def results_preview(self, record: Record) -> str:
        text = json.dumps(record.results, ensure_ascii=False)
        return text if len(text) <= JSON_PREVIEW_CHARS else text[:JSON_PREVIEW_CHARS] + "…"

    @admin.display(description="input")
    def input_pretty(self, record: Record) -> str:
        return pretty_json(record.input)

    @admin.display(description="results")
    def results_pretty(self, record: Record) -> str:
        return pretty_json(record.results)
