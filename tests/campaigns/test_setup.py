"""First-run set-up: the admin user and the demo (bin/run calls both commands)."""
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from campaigns.models import Campaign, Dataset


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_creates_an_admin_once_and_prints_its_password_once():
    first = run("bootstrap_admin")
    password = first.split("with password ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)

    assert run("bootstrap_admin") == "a superuser exists already; nothing created\n"
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_setup_demo_makes_the_dataset_and_the_xtb_campaign_and_is_idempotent():
    first = run("setup_demo")
    dataset = Dataset.objects.get(name="demo")
    campaign = Campaign.objects.get(name="xtb_demo")
    assert dataset.record_count >= 50
    assert (campaign.dataset, campaign.function, campaign.state) == (dataset, "xtb.run", "draft")
    assert f"{dataset.record_count:,} in all" in first
    assert "campaign created xtb_demo (xtb.run, state draft)" in first

    again = run("setup_demo")
    assert "0 records added" in again and "exists already: xtb_demo" in again
    assert Campaign.objects.count() == 1 and campaign.arg_sets.count() == 1


@pytest.mark.django_db
def test_setup_demo_launch_launches_a_draft_once(redis_conn, settings, redis_server):
    settings.REDIS_URL = redis_server.url
    first = run("setup_demo", "--launch")
    campaign = Campaign.objects.get(name="xtb_demo")
    records = Dataset.objects.get(name="demo").record_count
    assert campaign.state == "running" and campaign.tasks.count() == records
    assert f"launched xtb_demo: {records:,} tasks added" in first
    assert redis_conn.llen("rq:queue:xtb:normal") == records  # fed at once, not at the next round

    again = run("setup_demo", "--launch")
    assert "launched" not in again and campaign.tasks.count() == records
