"""First-run set-up: an admin user and the demo campaign."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from django.conf import settings
from django.contrib.auth import get_user_model

from campaigns.models import Campaign, Dataset
from campaigns.services.definitions import campaign_definition_parse, campaign_import
from campaigns.services.records import ImportReport, demo_load

DEMO_CAMPAIGN_FILE = Path(settings.BASE_DIR) / "examples" / "xtb_gfn2.yaml"


def admin_user_ensure(*, username: str = "admin") -> str | None:
    """Create a superuser when there is none; return its new password, or None if one exists."""
    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(username=username, email="", password=password)
    return password


@dataclass(frozen=True)
class DemoSetup:
    dataset: Dataset
    records: ImportReport
    campaign: Campaign
    campaign_created: bool


def demo_setup(*, definition_file: Path = DEMO_CAMPAIGN_FILE) -> DemoSetup:
    """The demo dataset and the demo XTB campaign on it; what exists already is left alone."""
    dataset, report = demo_load()
    definition = campaign_definition_parse(text=definition_file.read_text(),
                                           source=str(definition_file.name),
                                           base_dir=definition_file.parent)
    existing: Optional[Campaign] = Campaign.objects.filter(name=definition.name).first()
    if existing is not None:
        return DemoSetup(dataset, report, existing, campaign_created=False)
    campaign = campaign_import(definition=definition, dataset_name=dataset.name)
    return DemoSetup(dataset, report, campaign, campaign_created=True)
