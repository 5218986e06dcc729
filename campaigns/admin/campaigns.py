"""Admin for campaigns and their arg sets, with job definition file import and export."""
from __future__ import annotations

import io
import zipfile

from django.contrib import admin, messages
from django.db import models
from django.forms import Textarea
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns.admin.actions import LIFECYCLE_ACTIONS
from campaigns.admin.dashboard_actions import DASHBOARD_ACTIONS
from campaigns.errors import ApplicationError, DefinitionError
from campaigns.forms import CampaignAdminForm, DefinitionUploadForm
from campaigns.models import ArgSet, Campaign
from campaigns.selectors import campaign_describe, campaign_get
from campaigns.services.definitions import campaign_definition_parse, campaign_export, campaign_import
from campaigns.services.input_policy import campaign_trust_check, user_may_trust

_JSON_WIDGET = {models.JSONField: {"widget": Textarea(attrs={"rows": 4, "cols": 90})}}


# What workers run and where results go: fixed once a campaign is launched, since its jobs,
# its spec in Redis and its collected results are of this definition. A change goes through
# the "New version" action (or Clone), which gives it a new spec_version.
DEFINITION_FIELDS = ["name", "dataset", "function", "job_timeout", "output_key", "query",
                     "projection", "queue"]


def _launched(campaign) -> bool:
    return campaign is not None and campaign.state != Campaign.State.DRAFT


class ArgSetInline(admin.StackedInline):
    model = ArgSet
    extra = 0
    ordering = ["position", "id"]
    fields = ["position", "name", "parameters", "parsers", "keep_files"]
    formfield_overrides = _JSON_WIDGET

    # `obj` is the campaign: its arg sets are read-only once it is launched.
    def has_add_permission(self, request, obj=None):
        return not _launched(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return not _launched(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not _launched(obj) and super().has_delete_permission(request, obj)


def _yaml_download(campaign: Campaign) -> HttpResponse:
    response = HttpResponse(campaign_export(campaign=campaign), content_type="application/yaml")
    response["Content-Disposition"] = f'attachment; filename="{campaign.name}.yaml"'
    return response


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignAdminForm
    inlines = [ArgSetInline]
    list_display = ["name", "state", "dataset", "function_name", "queue_display", "trusted",
                    "updated_at", "yaml_link"]
    list_filter = ["state", "function", "dataset", "trusted"]
    list_select_related = ["dataset"]
    search_fields = ["name", "notes"]
    # State changes belong to launching, pausing and the collector, not to hand edits.
    readonly_fields = ["state", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "dataset", "state", "notes", "owner"]}),
        ("Job", {"fields": ["function", "job_timeout", "max_attempts", "output_key", "trusted"]}),
        ("Submission", {"fields": ["query", "projection", "queue", "priority"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at"]}),
    ]
    formfield_overrides = _JSON_WIDGET
    actions = ["export_selected", *LIFECYCLE_ACTIONS, *DASHBOARD_ACTIONS]

    @admin.display(description="function", ordering="function")
    def function_name(self, campaign: Campaign) -> str:
        return campaign.function  # the choice label's description is too long for a column

    @admin.display(description="queue", ordering="queue")
    def queue_display(self, campaign: Campaign) -> str:
        return campaign.queue_spec

    @admin.display(description="definition")
    def yaml_link(self, campaign: Campaign) -> str:
        url = reverse("admin:campaigns_campaign_export", args=[campaign.pk])
        return format_html('<a href="{}">{}.yaml</a>', url, campaign.name)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if _launched(obj):
            fields += DEFINITION_FIELDS
        # Trust lifts the program-input allowlist (input_policy): only staff may set it.
        if not user_may_trust(request.user) or _launched(obj):
            fields.append("trusted")
        return fields

    def render_change_form(self, request, context, add=False, change=False, form_url="",
                           obj=None):
        if _launched(obj):
            context["subtitle"] = (f"{obj.state}, version {obj.spec_version}: its definition "
                                   "is fixed; use the New version action (when it is done, "
                                   "failed or cancelled) or Clone to change it")
        return super().render_change_form(request, context, add=add, change=change,
                                          form_url=form_url, obj=obj)

    def save_model(self, request, obj, form, change):
        if "trusted" in form.changed_data:
            campaign_trust_check(user=request.user, trusted=obj.trusted)
        if obj.owner_id is None:
            obj.owner = request.user
        super().save_model(request, obj, form, change)

    def get_urls(self):
        own = [
            path("import/", self.admin_site.admin_view(self.import_view),
                 name="campaigns_campaign_import"),
            path("<int:pk>/export/", self.admin_site.admin_view(self.export_view),
                 name="campaigns_campaign_export"),
        ]
        return own + super().get_urls()

    @admin.action(description="Export selected campaigns as job definition files")
    def export_selected(self, request, queryset):
        campaigns = list(queryset.select_related("dataset"))
        if len(campaigns) == 1:
            return _yaml_download(campaigns[0])
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for campaign in campaigns:
                archive.writestr(f"{campaign.name}.yaml", campaign_export(campaign=campaign))
        response = HttpResponse(buffer.getvalue(), content_type="application/zip")
        response["Content-Disposition"] = 'attachment; filename="campaigns.zip"'
        return response

    def export_view(self, request, pk: int):
        campaign = self.get_object(request, str(pk))
        if campaign is None or not self.has_view_permission(request, campaign):
            raise Http404(f"no campaign with id {pk}")
        return _yaml_download(campaign)

    def import_view(self, request):
        if not self.has_add_permission(request):
            raise Http404("importing needs the permission to add campaigns")
        form = DefinitionUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                message = self._import(request, form)
            except ApplicationError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, message, messages.SUCCESS)
                return redirect("admin:campaigns_campaign_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import job definition file",
            "form": form,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/import.html", context)

    def _import(self, request, form: DefinitionUploadForm) -> str:
        data = form.cleaned_data
        if data["replace"] and not self.has_change_permission(request):
            raise DefinitionError("replacing a campaign needs the permission to change campaigns")
        definition = campaign_definition_parse(text=data["text"], source=data["file"].name)
        verb = "replaced" if campaign_get(name=definition.name) else "created"
        dataset = data["dataset"]
        campaign = campaign_import(definition=definition, replace=data["replace"], owner=request.user,
                                   user=request.user, dataset_name=dataset.name if dataset else None)
        return f"{verb} {campaign_describe(campaign=campaign)}"
