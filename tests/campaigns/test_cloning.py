"""campaign_clone and the admin's clone action."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from campaigns.models import ArgSet, Campaign, Dataset
from campaigns.services.cloning import campaign_clone

pytestmark = pytest.mark.django_db


@pytest.fixture
def original(db) -> Campaign:
    owner = get_user_model().objects.create_user(username="ann", password="x")
    campaign = Campaign.objects.create(
        name="wb97mv", dataset=Dataset.objects.create(name="demo"), function="noop",
        output_key="out", queue="orca", priority="high", max_attempts=5, job_timeout=900,
        query={"wb97mv.a": None}, projection=["charge"], state="running", spec_version=4,
        notes="first try", owner=owner)
    for position, name in enumerate(["a", "b"]):
        ArgSet.objects.create(campaign=campaign, position=position, name=name,
                              parameters={"route": f"! {name}"}, parsers={"stdout": ["p"]},
                              keep_files={"stdout": "{id}_%s.out" % name})
    return campaign


def arg_sets(campaign: Campaign) -> list:
    return list(campaign.arg_sets.order_by("position")
                .values("position", "name", "parameters", "parsers", "keep_files"))


def test_it_copies_a_campaign_into_a_draft_with_its_arg_sets(original):
    clone = campaign_clone(campaign=original)
    assert (clone.name, clone.state, clone.spec_version) == ("wb97mv-copy", "draft", 1)
    assert (clone.queue, clone.priority, clone.max_attempts, clone.job_timeout) == (
        "orca", "high", 5, 900)
    assert (clone.query, clone.projection, clone.notes) == ({"wb97mv.a": None}, ["charge"],
                                                            "first try")
    assert clone.owner == original.owner and clone.dataset == original.dataset
    assert arg_sets(clone) == arg_sets(original) and len(arg_sets(clone)) == 2
    assert original.arg_sets.count() == 2 and Campaign.objects.get(pk=original.pk).state == "running"


def test_it_numbers_further_copies(original):
    names = [campaign_clone(campaign=original).name for _ in range(3)]
    assert names == ["wb97mv-copy", "wb97mv-copy-2", "wb97mv-copy-3"]


def test_a_long_name_is_cut_to_fit(original):
    original.name = "x" * 100
    original.save()
    clone = campaign_clone(campaign=original)
    assert clone.name == "x" * 90 + "-copy" and len(clone.name) <= 100
    assert campaign_clone(campaign=original).name == "x" * 90 + "-copy-2"


def test_the_admin_clones_the_selected_campaigns(client, original):
    admin = get_user_model().objects.create_superuser(username="root", password="x")
    client.force_login(admin)
    response = client.post(reverse("admin:campaigns_campaign_changelist"),
                           {"action": "clone", "_selected_action": [original.pk]}, follow=True)
    # The admin capitalises the first letter of a message.
    assert "Wb97mv: cloned as wb97mv-copy (draft)" in response.content.decode()
    clone = Campaign.objects.get(name="wb97mv-copy")
    assert clone.owner == admin and arg_sets(clone) == arg_sets(original)
