"""The results pages in a real browser: a non-staff chemist logs in through the dashboard's own
login page, sees the histograms drawn (uPlot canvases), opens a record and sees the molecule in
3D (3Dmol.js's WebGL canvas), downloads a kept file; screenshots go to test-artifacts/.

Real chromium (Debian's, through Playwright), the live server, SQLite; no workers: the results
are planted in the records as the collector writes them.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from campaigns.models import ArgSet, Record
from campaigns.services.kept_files import kept_file_save
from tests.dashboard.conftest import PASSWORD
from tests.dashboard.test_results_pages import WATER, result

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Headless chromium draws WebGL (3Dmol.js) only with its software renderer enabled.
DRAWN_WITHIN_MS = 30_000
CHROMIUM_ARGS = ["--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--ignore-gpu-blocklist"]


@pytest.fixture
def chromium_page(playwright):
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    yield page
    browser.close()


def test_a_chemist_sees_histograms_and_a_molecule_in_3d(chromium_page, live_server, make_ledger,
                                                        make_user, settings):
    # The one line htportal/settings.py is to get (the views of results_views name it already).
    settings.LOGIN_URL = "/dashboard/login/"
    page = chromium_page
    chemist = make_user("chemist")
    campaign = make_ledger("water-scan", chemist, {"done": 40})
    ArgSet.objects.filter(campaign=campaign).update(keep_files={"stdout": "{id}_a.out"})
    values = {n: result(n) for n in range(40)}
    values[17] = result(17, energy=-80.0)  # the planted outlier
    Record.objects.bulk_create(
        Record(dataset=campaign.dataset, record_id=f"done-{n:04d}", input=WATER,
               results={"out": {"a": values[n]}}) for n in range(40))
    kept_file_save(campaign=campaign.name, record_id="done-0017", name="done-0017_a.out",
                   content=b"xtb output of done-0017\n")
    base = live_server.url

    page.goto(f"{base}/dashboard/")
    expect(page).to_have_url(re.compile(r"/dashboard/login/\?next=/dashboard/"))
    page.fill("#id_username", "chemist")
    page.fill("#id_password", PASSWORD)
    page.click("#login-form input[type=submit]")
    expect(page).to_have_url(f"{base}/dashboard/")
    expect(page.locator("tr.campaign-row")).to_have_count(1)

    page.goto(f"{base}/dashboard/campaigns/water-scan/results/")
    expect(page.locator("#histogram-energy_per_atom canvas")).to_be_visible(
        timeout=DRAWN_WITHIN_MS)
    expect(page.locator("#histogram-max_force canvas")).to_be_visible()
    expect(page.locator("#histogram-energy_per_atom")).to_have_attribute("data-bins", "30")
    expect(page.locator("tr.result-row")).to_have_count(40)
    expect(page.locator("tr.outlier")).to_have_count(1)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-results.png"), full_page=True)

    page.click("tr.outlier td a")
    expect(page.locator("#record-id")).to_have_text("Record done-0017")
    # 3Dmol.js is half a megabyte and WebGL is software-drawn: slow on a busy machine.
    expect(page.locator("#molecule-view canvas")).to_be_visible(timeout=DRAWN_WITHIN_MS)
    expect(page.locator("#molecule-view")).to_have_attribute("data-atoms", "3",
                                                             timeout=DRAWN_WITHIN_MS)
    expect(page.locator(".prov-program").first).to_have_text("xtb")
    page.wait_for_timeout(500)  # let WebGL draw the frame before the screenshot
    page.screenshot(path=str(ARTIFACTS / "dashboard-record.png"), full_page=True)

    with page.expect_download() as download:
        page.click("a.kept-file")
    assert Path(download.value.path()).read_bytes() == b"xtb output of done-0017\n"
