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
from campaigns.services.lifecycle import campaign_launch
from campaigns.services.records import ImportReport, demo_load
from campaigns.services.submission import SubmitReport

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
    launch: Optional[SubmitReport] = None


def demo_setup(*, definition_file: Path = DEMO_CAMPAIGN_FILE, launch: bool = False) -> DemoSetup:
    """The demo dataset and the demo XTB campaign on it; what exists already is left alone.

    launch: also launch the campaign while it is a draft (bin/run does, so that a newcomer sees
    it run); a campaign that ran or was stopped is never relaunched behind the user's back.
    """
    dataset, report = demo_load()
    definition = campaign_definition_parse(text=definition_file.read_text(),
                                           source=str(definition_file.name),
                                           base_dir=definition_file.parent)
    existing: Optional[Campaign] = Campaign.objects.filter(name=definition.name).first()
    campaign = existing or campaign_import(definition=definition, dataset_name=dataset.name)
    launched = None
    if launch and campaign.state == Campaign.State.DRAFT:
        launched = campaign_launch(campaign=campaign)
    return DemoSetup(dataset, report, campaign, campaign_created=existing is None,
                     launch=launched)
