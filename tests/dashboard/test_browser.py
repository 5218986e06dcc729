"""The dashboard in a real browser, end to end: log in, import the XTB example through the
admin, launch it from the dashboard, watch real workers and the collector take it to 100 %,
open a failure's details, and keep a screenshot of the campaign page (test-artifacts/).

Real everything: chromium (Playwright), the live server, redis-server, two
`workers.runtime.worker` processes running xtb, and `manage.py collect`, all on the test
database. The workers are started here, not by the scaler's local pool.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from playwright.sync_api import Page, expect

from campaigns.models import Record
from campaigns.services.records import demo_load
from tests.dashboard.conftest import PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
MOLECULES = ["g2-CH4", "g2-H2O", "g2-C2H2", "g2-NH3"]
BROKEN = "g2-NH3"  # a doublet with 10 electrons: the worker refuses it
WORKERS = 2
DONE_WITHIN_MS = 90_000


@pytest.fixture
def small_demo(db) -> None:
    """The demo dataset cut to four molecules, one of them with an impossible multiplicity."""
    dataset, _ = demo_load()
    Record.objects.filter(dataset=dataset).exclude(record_id__in=MOLECULES).delete()
    broken = Record.objects.get(dataset=dataset, record_id=BROKEN)
    broken.input = {**broken.input, "multiplicity": 2}
    broken.save()


@pytest.fixture
def pipeline(live_server, redis_conn, redis_server, settings):
    """The portal (live server), two xtb workers and the collector on one Redis and one DB."""
    settings.REDIS_URL = redis_server.url
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "htportal.settings",
           "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
           "REDIS_URL": redis_server.url, "HTPORTAL_VAR_DIR": str(settings.VAR_DIR),
           "HTPORTAL_REDIS_URL": redis_server.url}
    logs = Path(settings.VAR_DIR) / "browser-test-logs"
    logs.mkdir(exist_ok=True)
    commands = {"collector": [sys.executable, "manage.py", "collect", "--reconcile-every", "2"]}
    for number in range(WORKERS):
        commands[f"worker{number}"] = [sys.executable, "-m", "workers.runtime.worker",
                                       "--max-idle", "120", "xtb:high", "xtb:normal", "xtb:low"]
    processes = {name: subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                        stderr=open(logs / f"{name}.log", "w"))
                 for name, argv in commands.items()}
    yield live_server
    for process in processes.values():
        process.terminate()
    for name, process in processes.items():
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/dashboard/")
    expect(page).to_have_url(re.compile(r"/dashboard/login/\?next=/dashboard/"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(f"{base}/dashboard/")


def test_a_campaign_goes_from_import_to_done_in_the_browser(page: Page, pipeline, small_demo,
                                                            make_user):
    base = pipeline.url
    make_user("chemist", staff=True)
    log_in(page, base, "chemist")

    page.goto(f"{base}/admin/campaigns/campaign/import/")
    page.set_input_files("#id_file", str(REPO / "examples" / "xtb_gfn2.yaml"))
    page.select_option("#id_dataset", "demo")
    page.click("#definition-import-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Created campaign xtb_demo (xtb.run, 1 arg set: gfn2) on dataset demo")

    page.goto(f"{base}/dashboard/")
    page.click("text=xtb_demo")
    page.click("button.action-launch")
    expect(page.locator(".message.success")).to_contain_text(
        "xtb_demo: 4 tasks added (0 selected records already had one), 4 jobs queued")

    status = page.locator("#campaign-status")
    expect(status.locator(".percent")).to_have_text("100 %", timeout=DONE_WITHIN_MS)
    expect(status.locator(".count-done")).to_have_text("3")
    expect(status.locator(".count-failed")).to_have_text("1")
    expect(status.locator(".failure-class")).to_contain_text("InputError")

    page.goto(page.url)  # the chart with every finished task in it
    expect(page.locator("#series-chart canvas")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-campaign.png"), full_page=True)

    page.locator(".failure-class summary").first.click()
    page.locator(".failure-class a.failure-link").first.click()
    expect(page.locator("#task-error-class")).to_have_text("InputError")
    expect(page.locator("#task-error-message")).to_contain_text(
        "multiplicity 2 (1 unpaired) is impossible with 10 electrons")
    page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"), full_page=True)
