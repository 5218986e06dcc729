"""The campaign admin: list, the job definition file import page, YAML export, and the same
rules as the import for what is typed into the forms."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from campaigns.models import Campaign
from campaigns.services.definitions import campaign_definition_parse, campaign_export, campaign_import
from workers.runtime import registry
from tests.campaigns.conftest import EXAMPLES

WB97MV = (EXAMPLES / "wb97mv.yaml").read_text()
IMPORT_URL = "/admin/campaigns/campaign/import/"
KNOWN_PARSERS = ", ".join(registry.parser_names())


def upload(client, text: str, name: str = "wb97mv.yaml", **fields):
    data = {"file": SimpleUploadedFile(name, text.encode(), content_type="application/yaml"), **fields}
    return client.post(IMPORT_URL, data)


def import_example(name: str = "wb97mv.yaml", dataset: str = "demo") -> Campaign:
    text = (EXAMPLES / name).read_text()
    return campaign_import(definition=campaign_definition_parse(text=text, source=name), dataset_name=dataset)


@pytest.mark.django_db
def test_the_changelist_shows_state_dataset_function_queue_and_the_import_link(admin_client, demo_dataset):
    import_example()

    page = admin_client.get("/admin/campaigns/campaign/").content.decode()

    assert f'href="{IMPORT_URL}"' in page and "Import job definition file" in page
    assert ('<td class="field-state">Draft</td><td class="field-dataset nowrap">demo</td>'
            '<td class="field-function_name">orca.sequential</td>'
            '<td class="field-queue_display">orca:high</td>') in page
    assert f'<a href="/admin/campaigns/campaign/{Campaign.objects.get().pk}/export/">wb97mv.yaml</a>' in page


@pytest.mark.django_db
def test_the_changelist_filters_by_state_and_searches_notes(admin_client, demo_dataset):
    import_example()
    import_example("xtb_gfn2.yaml")
    Campaign.objects.filter(name="xtb_demo").update(state="done", notes="GFN2 for the whole set")

    done = admin_client.get("/admin/campaigns/campaign/?state__exact=done").context["cl"].result_list
    found = admin_client.get("/admin/campaigns/campaign/?q=whole").context["cl"].result_list

    assert [c.name for c in done] == [c.name for c in found] == ["xtb_demo"]


@pytest.mark.django_db
def test_it_imports_an_uploaded_file(admin_client, admin_user, demo_dataset):
    response = upload(admin_client, WB97MV, dataset="demo")

    assert response.status_code == 302 and response.url == "/admin/campaigns/campaign/"
    messages = [str(m) for m in admin_client.get(response.url).context["messages"]]
    assert messages == ["created campaign wb97mv (orca.sequential, 1 arg set: wb97md3bj) on dataset demo, "
                        "queue orca:high"]
    campaign = Campaign.objects.get(name="wb97mv")
    assert (campaign.function, campaign.owner) == ("orca.sequential", admin_user)
    assert campaign.arg_sets.get().parsers == {"stdout": ["orca.total_energy", "orca.gradient", "orca.dipole"]}


@pytest.mark.django_db
def test_an_upload_replaces_only_when_asked(admin_client, demo_dataset, campaign_snapshot):
    import_example()
    before = campaign_snapshot("wb97mv")
    changed = WB97MV.replace("job_timeout: 15000", "job_timeout: 60")

    refused = upload(admin_client, changed, dataset="demo")
    assert campaign_snapshot("wb97mv") == before
    replaced = upload(admin_client, changed, dataset="demo", replace="on")

    assert refused.context["form"].non_field_errors() == [
        "wb97mv.yaml: campaign: a campaign named 'wb97mv' already exists; import with replace (--replace) "
        "to overwrite it"
    ]
    assert replaced.status_code == 302
    assert Campaign.objects.get(name="wb97mv").job_timeout == 60


@pytest.mark.django_db
@pytest.mark.parametrize("text, fields, error", [
    (WB97MV.replace("htrq.htrun.parser.orca.total_energy", "orca.totl_energy"), {"dataset": "demo"},
     f"wb97mv.yaml: campaign_config.args[0] (wb97md3bj): unknown parser 'orca.totl_energy' (known: {KNOWN_PARSERS})"),
    (WB97MV, {}, "wb97mv.yaml: no dataset given: name one in the file (dataset: NAME) or when importing "
                 "(--dataset NAME)"),
    ("campaign: [wb97mv\n", {"dataset": "demo"},
     "wb97mv.yaml: line 2, column 1: malformed YAML: expected ',' or ']', but got '<stream end>' "
     "(while parsing a flow sequence started at line 1, column 11)"),
], ids=["unknown parser", "no dataset", "malformed"])
def test_a_refused_upload_shows_the_error_and_writes_nothing(admin_client, demo_dataset, db_counts,
                                                             text, fields, error):
    before = db_counts()

    response = upload(admin_client, text, **fields)

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [error]
    assert "errornote" in response.content.decode()
    assert db_counts() == before


@pytest.mark.django_db
def test_an_upload_with_a_receptor_path_is_refused(admin_client, demo_dataset, vina_definition, db_counts):
    before = db_counts()

    response = upload(admin_client, vina_definition.read_text(), name="vina.yaml")

    assert response.context["form"].non_field_errors() == [
        "vina.yaml: campaign_config.args[0] (site1): receptor 'protein.pdbqt' is a path, which only "
        "import_campaign reads; give the receptor inline as {name, content}"
    ]
    assert db_counts() == before


@pytest.mark.django_db
def test_the_per_campaign_link_downloads_the_yaml(admin_client, demo_dataset):
    campaign = import_example()

    change_page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    export_url = reverse("admin:campaigns_campaign_export", args=[campaign.pk])
    response = admin_client.get(export_url)

    assert f'href="{export_url}"' in change_page
    assert response["Content-Disposition"] == 'attachment; filename="wb97mv.yaml"'
    assert response.content.decode() == campaign_export(campaign=campaign)


@pytest.mark.django_db
def test_the_export_action_downloads_one_file_or_a_zip(admin_client, demo_dataset):
    campaigns = [import_example(), import_example("xtb_gfn2.yaml")]
    url = "/admin/campaigns/campaign/"

    one = admin_client.post(url, {"action": "export_selected", "_selected_action": [campaigns[0].pk]})
    both = admin_client.post(url, {"action": "export_selected", "_selected_action": [c.pk for c in campaigns]})

    assert one["Content-Disposition"] == 'attachment; filename="wb97mv.yaml"'
    assert one.content.decode() == campaign_export(campaign=campaigns[0])
    archive = zipfile.ZipFile(io.BytesIO(both.content))
    assert {n: archive.read(n).decode() for n in archive.namelist()} == {
        f"{c.name}.yaml": campaign_export(campaign=c) for c in campaigns
    }


def campaign_form(dataset, *, function="orca.sequential", parsers=None) -> dict:
    return {
        "name": "hand-made", "dataset": dataset.pk, "notes": "", "owner": "", "function": function,
        "job_timeout": "600", "max_attempts": "3", "output_key": "pbe", "query": "{}", "projection": "[]",
        "queue": "orca", "priority": "normal",
        "arg_sets-TOTAL_FORMS": "1", "arg_sets-INITIAL_FORMS": "0",
        "arg_sets-MIN_NUM_FORMS": "0", "arg_sets-MAX_NUM_FORMS": "1000",
        "arg_sets-0-position": "0", "arg_sets-0-name": "pbe",
        "arg_sets-0-parameters": json.dumps({"route": "! PBE def2-svp"}),
        "arg_sets-0-parsers": json.dumps(parsers or {"stdout": ["orca.total_energy"]}),
        "arg_sets-0-keep_files": "{}",
    }


@pytest.mark.django_db
def test_the_add_form_stores_a_campaign_with_its_arg_set(admin_client, demo_dataset):
    response = admin_client.post("/admin/campaigns/campaign/add/", campaign_form(
        demo_dataset, parsers={"stdout": ["htrq.htrun.parser.orca.total_energy"]}))

    assert response.status_code == 302
    arg_set = Campaign.objects.get(name="hand-made").arg_sets.get()
    assert arg_set.parsers == {"stdout": ["orca.total_energy"]}


@pytest.mark.django_db
def test_the_arg_set_inline_refuses_an_unknown_parser_naming_the_known_ones(admin_client, demo_dataset, db_counts):
    before = db_counts()

    response = admin_client.post("/admin/campaigns/campaign/add/", campaign_form(
        demo_dataset, parsers={"stdout": ["orca.totl_energy"]}))

    assert response.status_code == 200
    inline_errors = response.context["inline_admin_formsets"][0].formset.errors
    assert inline_errors == [{"parsers": [f"unknown parser 'orca.totl_energy' (known: {KNOWN_PARSERS})"]}]
    assert db_counts() == before


@pytest.mark.django_db
def test_the_form_refuses_an_unknown_function_naming_the_known_ones(admin_client, demo_dataset, db_counts):
    before = db_counts()

    response = admin_client.post("/admin/campaigns/campaign/add/", campaign_form(demo_dataset, function="orca.seq"))

    assert response.context["adminform"].form.errors["function"] == [
        f"unknown function 'orca.seq' (known: {', '.join(registry.task_names())})"
    ]
    assert db_counts() == before


def change_form(campaign: Campaign, **fields) -> dict:
    """Every field of the change form, with `fields` (and arg set fields "arg_set_NAME")
    changed; the arg set inline as it is on the page."""
    arg_set = campaign.arg_sets.get()
    data = {
        "name": campaign.name, "dataset": campaign.dataset_id, "notes": campaign.notes,
        "owner": "", "function": campaign.function, "job_timeout": str(campaign.job_timeout),
        "max_attempts": str(campaign.max_attempts), "output_key": campaign.output_key,
        "query": json.dumps(campaign.query), "projection": json.dumps(campaign.projection),
        "queue": campaign.queue, "priority": campaign.priority,
        "arg_sets-TOTAL_FORMS": "1", "arg_sets-INITIAL_FORMS": "1",
        "arg_sets-MIN_NUM_FORMS": "0", "arg_sets-MAX_NUM_FORMS": "1000",
        "arg_sets-0-id": str(arg_set.pk), "arg_sets-0-campaign": str(campaign.pk),
        "arg_sets-0-position": "0", "arg_sets-0-name": arg_set.name,
        "arg_sets-0-parameters": json.dumps(arg_set.parameters),
        "arg_sets-0-parsers": json.dumps(arg_set.parsers),
        "arg_sets-0-keep_files": json.dumps(arg_set.keep_files),
    }
    for name, value in fields.items():
        key = f"arg_sets-0-{name[len('arg_set_'):]}" if name.startswith("arg_set_") else name
        data[key] = value
    return data


def definition(campaign: Campaign) -> tuple:
    campaign.refresh_from_db()
    arg_set = campaign.arg_sets.get()
    return (campaign.output_key, campaign.queue, campaign.dataset.name, campaign.spec_version,
            arg_set.parameters["method"])


def change_url(campaign: Campaign) -> str:
    return f"/admin/campaigns/campaign/{campaign.pk}/change/"


EDITS = {"output_key": "elsewhere", "queue": "other", "arg_set_parameters": json.dumps(
    {"method": "gfn1", "task": "grad"})}


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["running", "paused", "done", "failed"])
def test_a_launched_campaign_s_definition_cannot_be_edited(admin_client, demo_dataset,
                                                           other_dataset, state):
    campaign = import_example("xtb_gfn2.yaml")
    Campaign.objects.filter(pk=campaign.pk).update(state=state)
    before = definition(campaign)

    page = admin_client.get(change_url(campaign)).content.decode()
    response = admin_client.post(change_url(campaign), change_form(
        campaign, dataset=other_dataset.pk, notes="rerun after the fix", priority="low",
        max_attempts="5", **EDITS))

    assert response.status_code == 302
    assert definition(campaign) == before == ("xtb", "xtb", "demo", 1, "gfn2")
    # What does not change what workers run or where results go stays editable.
    assert (campaign.notes, campaign.priority, campaign.max_attempts) == (
        "rerun after the fix", "low", 5)
    assert 'name="output_key"' not in page and 'name="arg_sets-0-parameters"' not in page
    assert "its definition is fixed; use the New version action" in page


@pytest.mark.django_db
def test_a_draft_s_definition_can_be_edited(admin_client, demo_dataset):
    campaign = import_example("xtb_gfn2.yaml")

    response = admin_client.post(change_url(campaign), change_form(campaign, **EDITS))

    assert response.status_code == 302
    assert definition(campaign) == ("elsewhere", "other", "demo", 1, "gfn1")


@pytest.mark.django_db
def test_a_new_version_is_a_draft_to_edit_whose_spec_is_published_at_launch(
        admin_client, demo_dataset, redis_conn):
    from campaigns.models import Record
    from campaigns.pipeline_keys import campaign_spec_key
    from campaigns.services.lifecycle import campaign_launch

    for record_id in ("water", "ammonia"):
        Record.objects.create(dataset=demo_dataset, record_id=record_id, input={})
    campaign = import_example("xtb_gfn2.yaml")
    assert campaign_launch(campaign=campaign, connection=redis_conn).added == 2
    campaign.tasks.update(state="done")
    Campaign.objects.filter(pk=campaign.pk).update(state="done")
    url = "/admin/campaigns/campaign/"

    refused = admin_client.post(url, {"action": "new_version", "_selected_action": [
        import_example("wb97mv.yaml").pk]}, follow=True)
    response = admin_client.post(url, {"action": "new_version",
                                       "_selected_action": [campaign.pk]}, follow=True)
    edited = admin_client.post(change_url(campaign), change_form(
        Campaign.objects.get(pk=campaign.pk), **EDITS))

    assert [str(m) for m in refused.context["messages"]] == [
        "campaign wb97mv is draft: only a done, failed, cancelled campaign can become a new "
        "version (pause is not enough: cancel it, or wait until it is done)"]
    assert [str(m) for m in response.context["messages"]] == [
        "xtb_demo: version 2, a draft; edit it, then launch it"]
    assert edited.status_code == 302
    assert definition(campaign) == ("elsewhere", "other", "demo", 2, "gfn1")
    assert campaign.state == "draft" and not campaign.tasks.exists()
    assert campaign_launch(campaign=campaign, connection=redis_conn).added == 2
    spec = json.loads(redis_conn.get(campaign_spec_key(campaign=campaign)))
    assert campaign_spec_key(campaign=campaign) == f"htportal:spec:{campaign.pk}:2"
    assert spec["arg_sets"][0]["parameters"]["method"] == "gfn1"
    assert {job_id.split("-")[1] for job_id in campaign.tasks.values_list("job_id", flat=True)} \
        == {"v2"}
