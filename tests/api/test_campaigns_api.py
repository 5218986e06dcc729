"""Campaigns through the API: create from JSON, YAML or a file, read, export, change, delete."""
from __future__ import annotations

import json

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from campaigns.models import Campaign
from campaigns.services.definitions import campaign_definition_parse
from tests.campaigns.conftest import EXAMPLES

pytestmark = pytest.mark.django_db
XTB_YAML = (EXAMPLES / "xtb_gfn2.yaml").read_text()


@pytest.fixture
def demo(owned_dataset):
    return owned_dataset("demo", count=3)


def post_yaml(api, text: str, path="/api/campaigns/", method="POST", query="?dataset=demo"):
    return api.generic(method, path + query, text.encode(), content_type="application/yaml")


def xtb_document(**changes) -> dict:
    document = yaml.safe_load(XTB_YAML)
    document.update(dataset="demo", **changes)
    return document


def test_it_creates_a_campaign_from_the_yaml_example(api, demo, alice):
    response = post_yaml(api, XTB_YAML)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["dataset"], body["state"], body["owner"]) == (
        "xtb_demo", "demo", "draft", "alice")
    assert body["arg_sets"] == [{
        "name": "gfn2", "parameters": {"method": "gfn2", "task": "grad"},
        "parsers": {"stdout": ["xtb.energy", "xtb.dipole", "xtb.homo_lumo_gap"],
                    "gradient": ["xtb.gradient"]},
        "keep_files": {"stdout": "{id}_gfn2.out"}}]
    assert Campaign.objects.get(name="xtb_demo").owner == alice


def test_json_and_yaml_make_the_same_campaign(api, demo):
    from_json = api.post("/api/campaigns/", xtb_document(), format="json")
    assert from_json.status_code == 201, from_json.json()
    exported = api.get("/api/campaigns/xtb_demo/definition/")
    assert exported["Content-Type"] == "application/yaml; charset=utf-8"
    api.delete("/api/campaigns/xtb_demo/")
    from_yaml = post_yaml(api, XTB_YAML)
    same = lambda body: {k: v for k, v in body.items()  # noqa: E731
                         if k not in ("id", "created_at", "updated_at")}
    assert same(from_json.json()) == same(from_yaml.json())
    assert exported.content.decode() == api.get("/api/campaigns/xtb_demo/definition/").content.decode()


def test_it_creates_a_campaign_from_a_multipart_file(api, demo):
    file = SimpleUploadedFile("xtb.yaml", XTB_YAML.encode())
    response = api.post("/api/campaigns/?dataset=demo", {"file": file}, format="multipart")
    assert response.status_code == 201
    assert response.json()["function"] == "xtb.run"


def test_json_is_checked_by_the_same_code_with_the_same_message(api, demo):
    bad_yaml = XTB_YAML.replace("- xtb.energy", "- xtb.enrgy")
    from_yaml = post_yaml(api, bad_yaml)
    document = xtb_document()
    document["campaign_config"]["args"][0]["parsers"]["stdout"][0] = "xtb.enrgy"
    from_json = api.post("/api/campaigns/?dataset=demo", document, format="json")
    assert from_yaml.status_code == from_json.status_code == 400
    assert from_yaml.json() == from_json.json()
    with pytest.raises(Exception) as parsed:
        campaign_definition_parse(text=bad_yaml, source="request body")
    assert from_json.json() == {"error": str(parsed.value)}
    assert "unknown parser 'xtb.enrgy'" in from_json.json()["error"]
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("text", [
    "campaign: x\ncampaign_config: [unclosed\n",
    XTB_YAML.replace("job_timeout: 600", "job_timeout: 600\n  job_timeout: 60"),
    XTB_YAML.replace("queue: xtb:normal", "queue: xtb:urgent"),
])
def test_a_bad_file_gets_the_message_the_command_gives(api, demo, tmp_path, monkeypatch, text):
    (tmp_path / "bad.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError) as command:
        call_command("import_campaign", "bad.yaml", "--dataset", "demo")
    file = SimpleUploadedFile("bad.yaml", text.encode())
    response = api.post("/api/campaigns/?dataset=demo", {"file": file}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"error": str(command.value)}


def test_a_dataset_of_another_user_cannot_be_used(api, bob, owned_dataset):
    owned_dataset("theirs", owner=bob)
    response = post_yaml(api, XTB_YAML, query="?dataset=theirs")
    assert response.status_code == 400
    assert response.json() == {"error": "dataset: no dataset named 'theirs' among yours "
                                        "(yours: none yet)"}
    assert not Campaign.objects.exists()


def test_a_draft_is_replaced_by_put(api, demo):
    post_yaml(api, XTB_YAML)
    changed = XTB_YAML.replace("job_timeout: 600", "job_timeout: 900")
    response = post_yaml(api, changed, path="/api/campaigns/xtb_demo/", method="PUT")
    assert response.status_code == 200, response.json()
    campaign = Campaign.objects.get(name="xtb_demo")
    assert (campaign.job_timeout, campaign.spec_version, campaign.state) == (900, 2, "draft")
    assert campaign.owner.username == "alice"


def test_put_cannot_rename(api, demo):
    post_yaml(api, XTB_YAML)
    response = post_yaml(api, XTB_YAML.replace("campaign: xtb_demo", "campaign: other"),
                         path="/api/campaigns/xtb_demo/", method="PUT")
    assert response.status_code == 400
    assert response.json() == {"error": "request body: campaign: the definition names campaign "
                                        "'other', not 'xtb_demo' (a campaign cannot be renamed)"}


def test_creating_a_taken_name_is_refused(api, demo):
    post_yaml(api, XTB_YAML)
    response = post_yaml(api, XTB_YAML)
    assert response.status_code == 400
    assert response.json() == {"error": "request body: campaign: the name 'xtb_demo' is not "
                                        "available; choose another"}


def test_a_name_another_user_took_gets_the_same_words(api, client_for, bob, demo,
                                                      owned_dataset):
    """Whose the name is, or that it is someone else's, is not said: bob hears what alice would."""
    owned_dataset("bobs", owner=bob)
    assert post_yaml(api, XTB_YAML).status_code == 201
    theirs = post_yaml(client_for(bob), XTB_YAML, query="?dataset=bobs")
    assert theirs.status_code == 400
    assert theirs.json() == {"error": "request body: campaign: the name 'xtb_demo' is not "
                                      "available; choose another"}
    assert "alice" not in theirs.content.decode()


@pytest.mark.parametrize("state", ["running", "paused", "done", "cancelled"])
def test_a_campaign_that_left_draft_cannot_be_changed_or_deleted(api, owned_campaign, state):
    campaign = owned_campaign(name="xtb_demo", state=state)
    message = {"error": f"campaign xtb_demo is {state}: only a draft campaign can be changed "
                        "or deleted"}
    put = post_yaml(api, XTB_YAML, path="/api/campaigns/xtb_demo/", method="PUT", query="")
    assert (put.status_code, put.json()) == (409, message)
    delete = api.delete("/api/campaigns/xtb_demo/")
    assert (delete.status_code, delete.json()) == (409, message)
    campaign.refresh_from_db()
    assert (campaign.function, campaign.state) == ("noop", state)


def test_a_draft_can_be_deleted(api, owned_campaign):
    owned_campaign(name="xtb_demo")
    assert api.delete("/api/campaigns/xtb_demo/").status_code == 204
    assert not Campaign.objects.filter(name="xtb_demo").exists()
    assert api.get("/api/campaigns/xtb_demo/").status_code == 404


def test_it_reads_a_campaign_and_exports_its_definition(api, demo):
    post_yaml(api, XTB_YAML)
    body = api.get("/api/campaigns/xtb_demo/").json()
    assert (body["queue"], body["priority"], body["query"]) == ("xtb", "normal", {"xtb.gfn2": None})
    definition = api.get("/api/campaigns/xtb_demo/definition/", HTTP_ACCEPT="application/yaml")
    assert definition.status_code == 200
    parsed = campaign_definition_parse(text=definition.content.decode(), source="x")
    assert (parsed.name, parsed.dataset, parsed.function) == ("xtb_demo", "demo", "xtb.run")


def test_a_body_that_is_not_a_mapping_is_refused(api, demo):
    response = api.generic("POST", "/api/campaigns/", json.dumps([1, 2]),
                           content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("request body: top level: expected a mapping")
