"""The definition services: parse (no database), import (all or nothing), export (round trip),
on SQLite and, where JSON key order and transactions differ, on PostgreSQL."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from campaigns.errors import DefinitionError
from campaigns.models import ArgSet, Campaign, Dataset
from campaigns.services.definitions import (
    campaign_definition_parse,
    campaign_export,
    campaign_import,
)
from tests.campaigns.conftest import EXAMPLES
from workers.runtime import registry

WB97MV = (EXAMPLES / "wb97mv.yaml").read_text()
VINA = """\
campaign: dock1
campaign_config:
  func_name: vina.dock
  args:
    - name: site1
      receptor: {receptor}
      center: [11, 90.5, 57.5]
      size: [22, 24, 28]
  kwargs:
    mongo_output_key: vina
"""
BOTH_DATABASES = pytest.mark.django_db(databases=["default", "postgres"])


def parse(text: str, **kwargs):
    return campaign_definition_parse(text=text, source="def.yaml", **kwargs)


def parse_error(text: str, **kwargs) -> str:
    with pytest.raises(DefinitionError) as caught:
        parse(text, **kwargs)
    return str(caught.value)


class _Everything:
    def __init__(self, alias: str):
        self.alias = alias

    def db_for_read(self, model, **hints):
        return self.alias

    db_for_write = db_for_read


@pytest.fixture(params=["default", "postgres"])
def database(request, settings):
    """The alias the services write to: every model is routed there for the test."""
    settings.DATABASE_ROUTERS = [_Everything(request.param)]
    Dataset.objects.create(name="demo")
    return request.param


# --- parse: no database (pytest-django refuses any query in these tests) -----------------

def test_parse_stores_canonical_names_and_reads_the_queue():
    definition = parse(WB97MV)

    assert definition.function == "orca.sequential"
    assert definition.arg_sets[0].parsers == {"stdout": ["orca.total_energy", "orca.gradient", "orca.dipole"]}
    assert (definition.queue, definition.priority, definition.output_key) == ("orca", "high", "wb97mv")
    assert (definition.dataset, definition.notes, definition.max_attempts) == (None, "", 3)


def test_parse_fills_in_what_a_minimal_file_leaves_out():
    definition = parse("campaign: c1\ncampaign_config:\n  func_name: noop\n  args: [{name: a}]\n"
                       "  kwargs: {mongo_output_key: k}\n")

    assert (definition.job_timeout, definition.queue, definition.priority) == (3600, "default", "normal")
    assert (definition.query, definition.projection) == ({}, [])
    assert definition.arg_sets[0].parameters == {}


@pytest.mark.parametrize("queue, expected", [("xtb", ("xtb", "normal")), ("gpu.a100:low", ("gpu.a100", "low"))])
def test_parse_reads_a_queue_with_or_without_priority(queue, expected):
    definition = parse(WB97MV.replace("queue: orca:high", f"queue: {queue}"))

    assert (definition.queue, definition.priority) == expected


def test_parse_accepts_the_htportal_only_keys():
    definition = parse("dataset: demo\nnotes: a note\n"
                       + WB97MV.replace("  job_timeout: 15000\n", "  job_timeout: 15000\n  max_attempts: 5\n"))

    assert (definition.dataset, definition.notes, definition.max_attempts) == ("demo", "a note", 5)


def test_parse_accepts_an_inline_receptor_as_it_is():
    definition = parse(VINA.format(receptor="{name: r.pdbqt, content: 'ATOM  1'}"))

    assert definition.arg_sets[0].parameters["receptor"] == {"name": "r.pdbqt", "content": "ATOM  1"}


def test_parse_refuses_a_receptor_path_without_a_directory():
    assert parse_error(VINA.format(receptor="protein.pdbqt")) == (
        "def.yaml: campaign_config.args[0] (site1): receptor 'protein.pdbqt' is a path, which only "
        "import_campaign reads; give the receptor inline as {name, content}"
    )


def test_parse_names_a_receptor_it_cannot_read(tmp_path):
    assert parse_error(VINA.format(receptor="missing.pdbqt"), base_dir=tmp_path) == (
        f"def.yaml: campaign_config.args[0] (site1): receptor 'missing.pdbqt': cannot read "
        f"{tmp_path / 'missing.pdbqt'}: [Errno 2] No such file or directory: '{tmp_path / 'missing.pdbqt'}'"
    )


@pytest.mark.parametrize("old, new, problem", [
    ("center: [11, 90.5, 57.5]", "center: [11, 90.5]", "center [11, 90.5] must be a list of 3 finite numbers of at most 10000 in size (Å)"),
    ("size: [22, 24, 28]", "size: [22, 0, 28]", "size [22, 0, 28] must be a list of 3 finite positive numbers of at most 500 in size (Å)"),
])
def test_parse_checks_vina_boxes(old, new, problem):
    text = VINA.format(receptor="{name: r.pdbqt, content: x}").replace(old, new)

    assert parse_error(text) == f"def.yaml: campaign_config.args[0] (site1): {problem}"


def test_parse_refuses_a_parameter_of_another_function():
    text = (EXAMPLES / "xtb_gfn2.yaml").read_text().replace("task: grad", "route: '! PBE'")

    assert parse_error(text) == ("def.yaml: campaign_config.args[0] (gfn2): unknown key 'route' "
                                 "(allowed: name, parsers, keep_files, method, task, charge, uhf, flags, "
                                 "gradient)")


def test_parse_refuses_a_receptor_the_worker_could_not_write():
    text = VINA.format(receptor="{name: ligand.pdbqt, content: 'ATOM  1'}")

    assert parse_error(text) == (
        "def.yaml: campaign_config.args[0] (site1): receptor name 'ligand.pdbqt' must be a plain "
        "file name ending in .pdbqt (letters, digits, '.', '_' and '-', starting with a letter or "
        "digit, at most 100 characters; no path), other than ligand.pdbqt and out.pdbqt")


def test_parse_refuses_an_xtb_method_it_does_not_know():
    text = (EXAMPLES / "xtb_gfn2.yaml").read_text().replace("method: gfn2 ", "method: gfn3 ")

    assert parse_error(text) == ("def.yaml: campaign_config.args[0] (gfn2): method 'gfn3' is not allowed "
                                 "(allowed: gfn2, gfn1, gfnff)")


def test_parse_refuses_a_boolean_timeout():
    assert parse_error(WB97MV.replace("job_timeout: 15000", "job_timeout: yes")) == (
        "def.yaml: campaign_config.job_timeout: job timeout (s) True is not a whole number"
    )


def test_parse_refuses_an_empty_file():
    assert parse_error("") == ("def.yaml: top level: expected a mapping with keys campaign, dataset, notes, "
                               "campaign_config, submit, got None")


# --- import and export, on both databases ---------------------------------------------

@BOTH_DATABASES
def test_import_then_export_round_trips_byte_for_byte(database):
    campaign = campaign_import(definition=parse((EXAMPLES / "xtb_gfn2.yaml").read_text()), dataset_name="demo")
    first = campaign_export(campaign=campaign)
    Campaign.objects.using(database).filter(pk=campaign.pk).update(state=Campaign.State.FAILED)

    again = campaign_import(definition=parse(first), replace=True)

    assert campaign_export(campaign=again) == first
    assert Campaign.objects.using(database).get().arg_sets.get().parsers["gradient"] == ["xtb.gradient"]


@BOTH_DATABASES
def test_a_failure_while_writing_leaves_the_old_campaign_as_it_was(database, campaign_snapshot, monkeypatch):
    campaign_import(definition=parse(WB97MV), dataset_name="demo")
    before = campaign_snapshot("wb97mv", using=database)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ArgSet.objects, "bulk_create", fail)
    with pytest.raises(RuntimeError):
        campaign_import(definition=parse(WB97MV.replace("15000", "99")), dataset_name="demo", replace=True)

    assert campaign_snapshot("wb97mv", using=database) == before


@pytest.mark.django_db
def test_import_sets_the_owner_and_a_replace_keeps_it(demo_dataset):
    alice = User.objects.create(username="alice")
    campaign_import(definition=parse(WB97MV), dataset_name="demo", owner=alice)

    campaign = campaign_import(definition=parse(WB97MV), dataset_name="demo", replace=True)

    assert campaign.owner == alice


# --- the models apply the same rules to what the admin stores ---------------------------

@pytest.mark.django_db
def test_the_models_resolve_aliases_and_refuse_unknown_parsers(demo_dataset):
    campaign = Campaign(name="c1", dataset=demo_dataset, function="htrq.htrun.scripts.orca.sequential",
                        output_key="c1")
    campaign.clean()
    arg_set = ArgSet(campaign=campaign, name="a", parameters={"route": "! HF"},
                     parsers={"stdout": ["htrq.htrun.parser.orca.dipole"]})
    arg_set.clean()
    assert (campaign.function, arg_set.parsers) == ("orca.sequential", {"stdout": ["orca.dipole"]})

    arg_set.parsers = {"stdout": ["orca.dipol"]}
    with pytest.raises(ValidationError) as caught:
        arg_set.clean()
    assert caught.value.message_dict == {"parsers": [
        f"unknown parser 'orca.dipol' (known: {', '.join(registry.parser_names())})"
    ]}
