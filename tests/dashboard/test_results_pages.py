"""The results, record and kept-file pages, and the dashboard's own login: the test client on
SQLite (and mongomock for the MongoDB store), real storage for kept files."""
from __future__ import annotations

import json
import re

import mongomock
import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns.dashboard import results_selectors
from campaigns.models import ArgSet, Campaign, Dataset, Record
from campaigns.services.kept_files import kept_file_save
from campaigns.stores import ResultUpdate, mongodb, store_for
from tests.dashboard.conftest import PASSWORD

pytestmark = pytest.mark.django_db

HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.529177210903
WATER = {"elements": ["O", "H", "H"],
         "coordinates": [[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]],
         "charge": 0, "multiplicity": 1, "source": "g2"}


def result(number: int, *, energy: float | None = None, gradient: float = 0.001) -> dict:
    """A water result: energy -76.0 - number/1000 Eh, a small gradient, dipole, gap."""
    return {
        "energy": {"value": energy if energy is not None else -76.0 - number / 1000,
                   "unit": "Eh"},
        "gradient": {"value": [[0.0, 0.0, gradient], [0.0, gradient, 0.0],
                               [0.0, -gradient, 0.0]], "unit": "Eh/bohr"},
        "dipole_magnitude": {"value": 0.8 + number / 10000, "unit": "e·bohr"},
        "homo_lumo_gap_ev": {"value": 14.0 + number / 1000, "unit": "eV"},
        "best_affinity": {"value": -7.5, "unit": "kcal/mol"},
        "computed": {"program": "xtb", "version": "6.7.1", "method": "gfn2", "charge": 0,
                     "multiplicity": 1},
    }


def put_results(campaign: Campaign, count: int, *, start: int = 0, prefix: str = "w",
                overrides: dict | None = None) -> list[str]:
    """Records w-0000 ... of the campaign's dataset, each with the result out.a."""
    overrides = overrides or {}
    ids = [f"{prefix}-{number:04d}" for number in range(start, start + count)]
    Record.objects.bulk_create(
        Record(dataset=campaign.dataset, record_id=record_id, input=WATER,
               results={"out": {"a": overrides.get(record_id, result(number))}})
        for number, record_id in zip(range(start, start + count), ids))
    return ids


def results_url(campaign: Campaign, **params) -> str:
    url = reverse("dashboard:results", args=[campaign.name])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def record_rows(body: str) -> list[str]:
    return re.findall(r'<tr class="result-row[^"]*" data-record="([^"]+)"', body)


def histograms(body: str) -> dict:
    head = '<script id="histogram-data" type="application/json">'
    start = body.index(head) + len(head)
    return {h["key"]: h for h in json.loads(body[start:body.index("</script>", start)])}


# -- the results page ---------------------------------------------------------------------

def test_it_shows_each_result_with_its_values_in_chemists_units(owner_client, make_ledger,
                                                                 owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 3)
    body = owner_client.get(results_url(campaign)).content.decode()
    assert record_rows(body) == ["w-0000", "w-0001", "w-0002"]
    # -76.001 Eh over 3 atoms = -689.3642 eV per atom; |g| 0.001 Eh/bohr = 0.0514 eV/Å;
    # 0.8001 e·bohr = 2.0337 D; the gap as stored in eV.
    row = body[body.index('data-record="w-0001"'):]
    row = row[:row.index("</tr>")]
    assert f"{-76.001 * HARTREE_EV / 3:.4f}" == "-689.3642"
    for text in ("-689.3642", "0.0514", "2.0337", "14.0010", "-7.5000"):
        assert f'<td class="num">{text}</td>' in row, text
    for title in ("energy per atom (eV)", "max |F| (eV/Å)", "dipole magnitude (D)",
                  "HOMO–LUMO gap (eV)", "best_affinity (kcal/mol)"):
        assert title in body
    record_url = reverse("dashboard:record", args=[campaign.name, "w-0001"])
    assert f'href="{record_url}"' in body


def test_records_without_the_result_are_left_out(owner_client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 2)
    Record.objects.create(dataset=campaign.dataset, record_id="w-0009", input=WATER)
    assert record_rows(owner_client.get(results_url(campaign)).content.decode()) == [
        "w-0000", "w-0001"]


def test_it_pages_by_record_id(owner_client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, results_selectors.PAGE_SIZE + 7)
    body = owner_client.get(results_url(campaign)).content.decode()
    rows = record_rows(body)
    assert len(rows) == 50 and rows[0] == "w-0000" and rows[-1] == "w-0049"
    next_url = re.search(r'<a href="([^"]+)" id="next-page">', body).group(1).replace("&amp;",
                                                                                      "&")
    assert "after=w-0049" in next_url
    second = owner_client.get(reverse("dashboard:results", args=[campaign.name]) + next_url)
    rows = record_rows(second.content.decode())
    assert rows == [f"w-{number:04d}" for number in range(50, 57)]
    assert 'id="next-page"' not in second.content.decode()


def test_it_sorts_by_a_value_either_way(owner_client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 60)  # energies fall with the number
    ascending = record_rows(owner_client.get(results_url(campaign, sort="energy_per_atom")
                                             ).content.decode())
    assert ascending[:3] == ["w-0059", "w-0058", "w-0057"] and len(ascending) == 50
    descending = owner_client.get(results_url(campaign, sort="-energy_per_atom")
                                  ).content.decode()
    assert record_rows(descending)[:2] == ["w-0000", "w-0001"]
    assert "page 1 of 2 of the sorted sample" in descending
    page_two = record_rows(owner_client.get(results_url(campaign, sort="-energy_per_atom",
                                                        page=2)).content.decode())
    assert page_two == [f"w-{number:04d}" for number in range(50, 60)]
    gap = record_rows(owner_client.get(results_url(campaign, sort="-gap")).content.decode())
    assert gap[0] == "w-0059"
    by_id = record_rows(owner_client.get(results_url(campaign, sort="-id")).content.decode())
    assert by_id[0] == "w-0059"


def test_a_sorted_view_covers_a_bounded_sample_and_says_so(make_ledger, owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 30)
    view = results_selectors.results_view(campaign=campaign, sort="-energy_per_atom",
                                          sample_limit=10, page_size=5)
    assert view.sample_size == 10 and view.sample_full and view.pages == 2
    # The sample is the first 10 ids: w-0000 (highest energy) ... w-0009.
    assert [row.record_id for row in view.rows] == ["w-0000", "w-0001", "w-0002", "w-0003",
                                                    "w-0004"]


def test_the_query_box_filters_and_a_bad_query_says_what_is_wrong(owner_client, make_ledger,
                                                                  owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 3)
    Record.objects.filter(record_id="w-0001").update(input={**WATER, "charge": 1})
    body = owner_client.get(results_url(campaign, q='{"input.charge": 1}')).content.decode()
    assert record_rows(body) == ["w-0001"]
    bad = owner_client.get(results_url(campaign, q='{"out.a.energy": {"$regex": "x"}}'))
    text = bad.content.decode()
    assert bad.status_code == 200
    assert ('<p class="query-error" id="query-error">query: unsupported operator '
            "&#x27;$regex&#x27; at &#x27;out.a.energy&#x27;") in text
    assert record_rows(text) == []
    broken = owner_client.get(results_url(campaign, q="{charge: 1}")).content.decode()
    assert "query: the query is not JSON: Expecting property name enclosed in double quotes " \
           "at line 1 column 2" in broken


def test_histograms_count_every_value_of_the_sample(owner_client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 40)
    body = owner_client.get(results_url(campaign)).content.decode()
    data = histograms(body)
    assert set(data) >= {"energy_per_atom", "max_force", "dipole", "gap", "x:best_affinity"}
    energy = data["energy_per_atom"]
    assert sum(energy["counts"]) == 40 and len(energy["counts"]) == 30
    assert len(energy["edges"]) == 31
    assert energy["edges"][0] == pytest.approx(-76.039 * HARTREE_EV / 3)
    assert energy["edges"][-1] == pytest.approx(-76.0 * HARTREE_EV / 3)
    assert data["x:best_affinity"]["counts"] == [40]  # one value: one bin
    assert 'id="histogram-energy_per_atom"' in body
    assert "cover\n  all 40 results" in body


def test_it_flags_a_planted_outlier_and_an_unphysical_force(owner_client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 40, overrides={"w-0017": result(17, energy=-80.0),
                                         "w-0023": result(23, gradient=1.0)})
    body = owner_client.get(results_url(campaign)).content.decode()
    assert '<tr class="result-row outlier" data-record="w-0017">' in body
    assert '<tr class="result-row outlier" data-record="w-0023">' in body
    assert body.count('class="result-row outlier"') == 2
    outliers = body[body.index('id="outliers"'):]
    assert "w-0017</a>: energy per atom (eV) -725.6" in outliers
    # |g| of 1 Eh/bohr is 51.42 eV/Å
    assert "unphysical force: max |F| 51.4 eV/Å &gt; 10" in outliers
    # A wider bound lets the energy pass; the force stays unphysical.
    wide = owner_client.get(results_url(campaign, sigma=50)).content.decode()
    assert '<tr class="result-row" data-record="w-0017">' in wide
    assert '<tr class="result-row outlier" data-record="w-0023">' in wide


def test_the_results_page_costs_the_same_queries_for_few_or_many_records(owner_client,
                                                                         make_ledger, owner):
    small = make_ledger("small", owner)
    put_results(small, 3)
    large = make_ledger("large", owner)
    large.dataset = Dataset.objects.create(name="large-data")
    large.save()
    put_results(large, 300)

    def queries(campaign: Campaign, **params) -> int:
        with CaptureQueriesContext(db_connection) as captured:
            assert owner_client.get(results_url(campaign, **params)).status_code == 200
        return len(captured)

    assert queries(small) == queries(large)
    assert queries(small, sort="max_force") == queries(large, sort="max_force")


def test_the_mongodb_store_gives_the_same_results_page(owner_client, make_ledger, owner,
                                                       monkeypatch):
    from tests.campaigns.test_stores import mongomock_add_update_without_sort
    monkeypatch.setattr(mongodb, "client_factory", mongomock.MongoClient)
    mongomock_add_update_without_sort(monkeypatch)
    dataset = Dataset.objects.create(name="mongo-data", store="mongodb",
                                     mongo_uri="mongodb://mongomock.invalid:27017/",
                                     mongo_database="htportal_test", mongo_collection="water")
    campaign = make_ledger("water", owner)
    campaign.dataset = dataset
    campaign.save()
    store = store_for(dataset)
    store.insert(records=[{"id": f"w-{n:04d}", "input": WATER} for n in range(55)])
    store.write_results(updates=[ResultUpdate(f"w-{n:04d}", "out", "a", result(n))
                                 for n in range(55) if n != 3])
    body = owner_client.get(results_url(campaign)).content.decode()
    rows = record_rows(body)
    assert len(rows) == 50 and "w-0003" not in rows and rows[-1] == "w-0050"
    assert sum(histograms(body)["energy_per_atom"]["counts"]) == 54
    assert record_rows(owner_client.get(results_url(campaign, sort="-energy_per_atom",
                                                    page=2)).content.decode())[-1] == "w-0054"
    page = owner_client.get(reverse("dashboard:record", args=[campaign.name, "w-0004"]))
    assert '<dd class="prov-program">xtb</dd>' in page.content.decode()


# -- one record ---------------------------------------------------------------------------

def test_the_record_page_shows_input_provenance_ledger_and_kept_files(owner_client,
                                                                      make_ledger, owner):
    campaign = make_ledger("water", owner, {"done": 1})
    ArgSet.objects.filter(campaign=campaign).update(keep_files={"stdout": "{id}_a.out"})
    put_results(campaign, 1, prefix="done")  # the ledger's task done-0000
    campaign.tasks.update(worker="node7.1.abc", host="node7", attempts=2, cpu_s=12.5)
    kept_file_save(campaign=campaign.name, record_id="done-0000", name="done-0000_a.out",
                   content=b"xtb says hello\n" * 100)
    url = reverse("dashboard:record", args=[campaign.name, "done-0000"])
    body = owner_client.get(url).content.decode()
    for fragment in ('<dd class="prov-program">xtb</dd>', '<dd class="prov-version">6.7.1</dd>',
                     '<dd class="prov-method">gfn2</dd>', '<dd class="prov-charge">0, 1</dd>',
                     '<dd class="prov-host">node7</dd>', "2 of 3", "node7.1.abc",
                     "12.5 s", "<dt>source</dt>", "H 0.000000 0.757000 -0.469000",
                     'id="molecule-view"', "/static/vendor/3dmol/3Dmol-min.js",
                     "energy per atom -689.3551 eV", "best_affinity"):
        assert fragment in body, fragment
    download = reverse("dashboard:kept-file", args=[campaign.name, "done-0000_a.out",
                                                    "done-0000"])
    assert f'href="{download}"' in body and "1.5\xa0KB" in body
    response = owner_client.get(download)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"xtb says hello\n" * 100
    assert response["Content-Disposition"] == 'attachment; filename="done-0000_a.out"'


def test_record_ids_of_any_text_reach_their_page(owner_client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    ArgSet.objects.filter(campaign=campaign).update(keep_files={"stdout": "{id}.out"})
    odd = "C1=CC=C(C=C1)/N=N/c2ccccc2 #7 ?x=1&y=%20 αβ/"
    Record.objects.create(dataset=campaign.dataset, record_id=odd, input=WATER,
                          results={"out": {"a": result(0)}})
    kept_file_save(campaign=campaign.name, record_id=odd,
                   name=f"{results_selectors.kept_name('{id}.out', odd)}", content=b"odd")
    url = reverse("dashboard:record", args=[campaign.name, odd])
    assert "%23" in url and "%3F" in url and "%CE%B1" in url
    body = owner_client.get(url).content.decode()
    assert '<h1 id="record-id">Record C1=CC=C(C=C1)/N=N/c2ccccc2 #7 ?x=1&amp;y=%20 αβ/</h1>' \
        in body
    file_url = re.search(r'<a class="kept-file" href="([^"]+)"', body).group(1)
    assert b"".join(owner_client.get(file_url.replace("&amp;", "&")).streaming_content) == b"odd"
    assert owner_client.get(reverse("dashboard:record", args=[campaign.name, "nope"])
                            ).status_code == 404


def test_a_file_the_campaign_does_not_keep_is_not_served(owner_client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 1)
    kept_file_save(campaign=campaign.name, record_id="w-0000", name="secret.txt",
                   content=b"not a kept file of an arg set")
    url = reverse("dashboard:kept-file", args=[campaign.name, "secret.txt", "w-0000"])
    assert owner_client.get(url).status_code == 404


def test_another_users_campaign_record_and_file_are_not_found(client, make_ledger, make_user,
                                                              owner):
    campaign = make_ledger("water", owner)
    ArgSet.objects.filter(campaign=campaign).update(keep_files={"stdout": "{id}_a.out"})
    put_results(campaign, 1)
    kept_file_save(campaign=campaign.name, record_id="w-0000", name="w-0000_a.out",
                   content=b"olga's")
    urls = [results_url(campaign), reverse("dashboard:record", args=[campaign.name, "w-0000"]),
            reverse("dashboard:kept-file", args=[campaign.name, "w-0000_a.out", "w-0000"]),
            reverse("dashboard:campaign-accounting", args=[campaign.name])]
    client.force_login(make_user("tom"))
    for url in urls:
        assert client.get(url).status_code == 404, url
    client.force_login(make_user("sam", staff=True))
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_the_campaign_page_links_every_export_format_and_the_results(owner_client,
                                                                      make_ledger, owner,
                                                                      portal_redis):
    campaign = make_ledger("water", owner)
    body = owner_client.get(reverse("dashboard:campaign", args=[campaign.pk])).content.decode()
    for fmt in ("jsonl", "extxyz", "qcschema", "hdf5"):
        assert f'href="/api/campaigns/water/results/{fmt}/"' in body
    assert f'href="{results_url(campaign)}"' in body
    assert f'hx-get="{reverse("dashboard:campaign-accounting", args=["water"])}"' in body


def test_the_export_links_accept_the_dashboard_session(owner_client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    put_results(campaign, 2)
    response = owner_client.get("/api/campaigns/water/results/jsonl/")
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["id"] == "w-0000"


# -- logging in ---------------------------------------------------------------------------

def test_anonymous_visitors_go_to_the_dashboards_login(client, make_ledger, owner):
    campaign = make_ledger("water", owner)
    for url in (results_url(campaign), reverse("dashboard:record", args=["water", "x"]),
                reverse("dashboard:accounting")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/dashboard/login/?next=")


def test_a_non_staff_user_logs_in_and_sees_only_their_campaigns(client, make_ledger, make_user,
                                                                owner, portal_redis):
    make_ledger("mine", owner)
    make_ledger("theirs", make_user("tom"))
    page = client.get(reverse("dashboard:login"))
    assert page.status_code == 200 and 'id="login-form"' in page.content.decode()
    wrong = client.post(reverse("dashboard:login"), {"username": "olga", "password": "nope"})
    assert 'id="login-error"' in wrong.content.decode()
    response = client.post(reverse("dashboard:login") + "?next=/dashboard/",
                           {"username": "olga", "password": PASSWORD, "next": "/dashboard/"},
                           follow=True)
    assert response.redirect_chain == [("/dashboard/", 302)]
    body = response.content.decode()
    assert 'data-campaign="mine"' in body and 'data-campaign="theirs"' not in body
    assert "olga" in body and "(staff)" not in body
    assert reverse("dashboard:workers") not in body  # pools and workers are staff's
    # Without a next, the login lands on the dashboard too (not /accounts/profile/).
    client.logout()
    plain = client.post(reverse("dashboard:login"), {"username": "olga", "password": PASSWORD})
    assert plain["Location"] == "/dashboard/"


def test_a_user_sees_their_own_datasets_with_their_campaigns(owner_client, make_ledger, owner,
                                                            make_user):
    mine = Dataset.objects.create(name="mine-data", owner=owner, record_count=12)
    Dataset.objects.create(name="their-data", owner=make_user("tom"))
    campaign = make_ledger("water", owner)
    campaign.dataset = mine
    campaign.save()
    body = owner_client.get(reverse("dashboard:datasets")).content.decode()
    assert re.findall(r'data-dataset="([^"]+)"', body) == ["mine-data"]
    assert '<td class="num">12</td>' in body and f'href="{results_url(campaign)}"' in body
