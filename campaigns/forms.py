"""Forms of the campaign admin: the campaign itself and the job definition file upload."""
from __future__ import annotations

from django import forms

from campaigns.errors import DefinitionError
from campaigns.models import Campaign, Dataset
from campaigns.services import definition_schema as schema
from workers.runtime import registry


class CampaignAdminForm(forms.ModelForm):
    # A plain CharField behind the select, so an unknown name gets the registry's message
    # (with the known names) instead of Django's "Select a valid choice", and aliases resolve.
    function = forms.CharField(widget=forms.Select(choices=registry.task_choices),
                               help_text="a task function of the registry")

    class Meta:
        model = Campaign
        fields = "__all__"

    def clean_function(self) -> str:
        try:
            return schema.check_task_name(self.cleaned_data["function"])
        except DefinitionError as exc:
            raise forms.ValidationError(str(exc)) from None


class DefinitionUploadForm(forms.Form):
    file = forms.FileField(label="job definition file (YAML)")
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.all(), required=False, empty_label="as named in the file",
        to_field_name="name", help_text="overrides the file's 'dataset:'",
    )
    replace = forms.BooleanField(
        required=False, help_text="replace a campaign of the same name (in draft, done or failed)",
    )

    def clean_file(self):
        """The upload; its text goes to cleaned_data["text"]."""
        upload = self.cleaned_data["file"]
        try:
            self.cleaned_data["text"] = upload.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise forms.ValidationError(
                f"{upload.name}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        return upload
