"""manage.py import_campaign: the example files import, and every bad input is refused with one
specific message (file, place, problem), a non-zero exit and an unchanged database."""
from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from campaigns.errors import QueryError
from campaigns.models import Campaign
from workers.runtime import registry
from tests.campaigns.conftest import EXAMPLES, REPO

WB97MV = (EXAMPLES / "wb97mv.yaml").read_text()
KNOWN_PARSERS = ", ".join(registry.parser_names())
KNOWN_FUNCTIONS = ", ".join(registry.task_names())


def run_import(*args: str) -> str:
    out = StringIO()
    call_command("import_campaign", *[str(a) for a in args], stdout=out)
    return out.getvalue()


def changed(old: str, new: str, text: str = WB97MV) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.django_db
def test_it_imports_the_orca_example_with_canonical_names(demo_dataset):
    out = run_import(EXAMPLES / "wb97mv.yaml", "--dataset", "demo")

    assert out == ("created campaign wb97mv (orca.sequential, 1 arg set: wb97md3bj) "
                   "on dataset demo, queue orca:high\n")
    campaign = Campaign.objects.get(name="wb97mv")
    assert (campaign.function, campaign.job_timeout, campaign.output_key) == ("orca.sequential", 15000, "wb97mv")
    assert (campaign.queue, campaign.priority, campaign.state) == ("orca", "high", "draft")
    assert (campaign.query, campaign.projection, campaign.dataset) == ({"wb97mv.wb97md3bj": None}, [], demo_dataset)
    arg_set = campaign.arg_sets.get()
    assert arg_set.name == "wb97md3bj"
    assert arg_set.parameters["route"].startswith("! wB97m-d3bj def2-tzvpp def2/j rijcosx engrad tightscf\n%elprop")
    assert arg_set.parameters["route"].endswith("%scf maxiter 256 end\n")
    assert arg_set.parsers == {"stdout": ["orca.total_energy", "orca.gradient", "orca.dipole"]}
    assert arg_set.keep_files == {"stdout": "{id}_wb97md3bj.out", "orca.gbw": "{id}_wb97md3bj.gbw"}


@pytest.mark.django_db
def test_it_imports_the_xtb_example(demo_dataset):
    out = run_import(EXAMPLES / "xtb_gfn2.yaml", "--dataset", "demo")

    assert out == "created campaign xtb_demo (xtb.run, 1 arg set: gfn2) on dataset demo, queue xtb:normal\n"
    arg_set = Campaign.objects.get(name="xtb_demo").arg_sets.get()
    assert arg_set.parameters == {"method": "gfn2", "task": "grad"}
    assert arg_set.parsers == {"stdout": ["xtb.energy", "xtb.dipole", "xtb.homo_lumo_gap"],
                               "gradient": ["xtb.gradient"]}


@pytest.mark.django_db
def test_the_dataset_option_overrides_the_files(demo_dataset, other_dataset, write_definition):
    path = write_definition("dataset: demo\n" + WB97MV, "wb97mv.yaml")

    run_import(path, "--dataset", "other")

    assert Campaign.objects.get(name="wb97mv").dataset == other_dataset


@pytest.mark.django_db
def test_the_files_dataset_is_used_without_the_option(demo_dataset, write_definition):
    run_import(write_definition("dataset: demo\nnotes: first try\n" + WB97MV, "wb97mv.yaml"))

    campaign = Campaign.objects.get(name="wb97mv")
    assert (campaign.dataset, campaign.notes) == (demo_dataset, "first try")


@pytest.mark.django_db
def test_it_replaces_a_done_campaign_in_place(demo_dataset, write_definition):
    run_import(EXAMPLES / "wb97mv.yaml", "--dataset", "demo")
    old = Campaign.objects.get(name="wb97mv")
    Campaign.objects.filter(pk=old.pk).update(state=Campaign.State.DONE)
    old.tasks.create(record_id="mol-1", job_id="c1-v1-old", state="done")
    old.task_minutes.create(minute="2026-11-26T10:00:00Z", done=1)
    path = write_definition(changed("job_timeout: 15000", "job_timeout: 200").replace("wb97md3bj", "pbe"))

    out = run_import(path, "--dataset", "demo", "--replace")

    assert out == "replaced campaign wb97mv (orca.sequential, 1 arg set: pbe) on dataset demo, queue orca:high\n"
    new = Campaign.objects.get(name="wb97mv")
    assert (new.pk, new.job_timeout, new.state) == (old.pk, 200, "draft")
    assert new.spec_version == old.spec_version + 1  # new arg sets, new job ids
    assert not new.tasks.exists()  # the old ledger described the old arg sets
    assert not new.task_minutes.exists()  # and so did its per-minute series
    assert list(new.arg_sets.values_list("name", flat=True)) == ["pbe"]


@pytest.mark.django_db
def test_it_reads_a_vina_receptor_path_relative_to_the_file(demo_dataset, vina_definition, monkeypatch):
    monkeypatch.chdir(REPO)  # not the file's directory

    run_import(vina_definition)

    parameters = Campaign.objects.get(name="dock1").arg_sets.get().parameters
    assert parameters["receptor"] == {"name": "protein.pdbqt",
                                      "content": (vina_definition.parent / "protein.pdbqt").read_text()}
    assert (parameters["center"], parameters["size"], parameters["seed"]) == ([11, 90.5, 57.5], [22, 24, 28], 42)


def bad_query_message() -> str:
    from campaigns.query import validate_query

    with pytest.raises(QueryError) as caught:
        validate_query({"$where": "sleep(1000)"})
    return str(caught.value)


# (what is wrong, how the file changes, the message after "<file>: ")
BAD_FILES = [
    ("malformed YAML", lambda: changed("  job_timeout: 15000", "  job_timeout: [15000"),
     lambda: "line 7, column 7: malformed YAML: expected ',' or ']', but got ':' "
             "(while parsing a flow sequence started at line 6, column 16)"),
    ("key written twice", lambda: changed("  job_timeout: 15000", "  job_timeout: 15000\n  job_timeout: 200"),
     lambda: "line 7, column 3: malformed YAML: key 'job_timeout' appears twice (first at line 6, "
             "column 3) (while constructing a mapping started at line 5, column 3)"),
    ("unknown top-level key", lambda: WB97MV + "colour: red\n",
     lambda: "top level: unknown key 'colour' (allowed: campaign, dataset, notes, campaign_config, submit)"),
    ("unknown arg set key", lambda: changed("      route: |", "      rout: |"),
     lambda: "campaign_config.args[0] (wb97md3bj): unknown key 'rout' "
             "(allowed: name, parsers, keep_files, route)"),
    ("unknown submit key", lambda: changed("  projection: []", "  projektion: []"),
     lambda: "submit: unknown key 'projektion' (allowed: query, projection, queue)"),
    ("unknown function", lambda: changed("htrq.htrun.scripts.orca.sequential", "htrq.htrun.scripts.orca.sequentail"),
     lambda: f"campaign_config.func_name: unknown function 'htrq.htrun.scripts.orca.sequentail' "
             f"(known: {KNOWN_FUNCTIONS})"),
    ("unknown parser", lambda: changed("htrq.htrun.parser.orca.total_energy", "orca.totl_energy"),
     lambda: f"campaign_config.args[0] (wb97md3bj): unknown parser 'orca.totl_energy' (known: {KNOWN_PARSERS})"),
    ("arg set without a name", lambda: changed("    - name: wb97md3bj\n      route", "    - route"),
     lambda: "campaign_config.args[0]: arg set name is missing (letters, digits, _ and - only, "
             "at most 100 characters)"),
    ("two arg sets with one name",
     lambda: changed("  kwargs:", "    - name: wb97md3bj\n      route: '! PBE def2-svp'\n  kwargs:"),
     lambda: "campaign_config.args[1] (wb97md3bj): arg set name 'wb97md3bj' is used twice "
             "(also campaign_config.args[0] (wb97md3bj))"),
    ("bad query", lambda: changed("    wb97mv.wb97md3bj: null", "    $where: sleep(1000)"),
     lambda: f"submit.query: {bad_query_message()}"),
    ("bad queue priority", lambda: changed("queue: orca:high", "queue: orca:urgent"),
     lambda: "submit.queue: queue 'orca:urgent': unknown priority 'urgent' "
             "(expected 'name:priority' with priority one of high, normal, low)"),
    ("bad queue name", lambda: changed("queue: orca:high", "queue: 'orca queue:high'"),
     lambda: "submit.queue: queue 'orca queue:high': queue name 'orca queue' is not allowed "
             "(a letter or digit, then letters, digits, _, . and -) "
             "(expected 'name:priority' with priority one of high, normal, low)"),
    ("non-numeric timeout", lambda: changed("job_timeout: 15000", "job_timeout: 4h"),
     lambda: "campaign_config.job_timeout: job timeout (s) '4h' is not a whole number"),
    ("zero timeout", lambda: changed("job_timeout: 15000", "job_timeout: 0"),
     lambda: "campaign_config.job_timeout: job timeout (s) 0 is not a whole number of at least 1"),
    ("keep file without {id}", lambda: changed("'{id}_wb97md3bj.gbw'", "'wb97md3bj.gbw'"),
     lambda: "campaign_config.args[0] (wb97md3bj): keep_files: orca.gbw: kept file name 'wb97md3bj.gbw' "
             "must contain {id}, or every record would write the same file"),
    ("keep file in a directory", lambda: changed("'{id}_wb97md3bj.gbw'", "'../{id}.gbw'"),
     lambda: "campaign_config.args[0] (wb97md3bj): keep_files: orca.gbw: kept file name '../{id}.gbw' "
             "must be a plain file name (no '/', '\\' or '..')"),
    ("no output key", lambda: changed("    mongo_output_key: wb97mv", "    mongo_output_key:"),
     lambda: "campaign_config.kwargs.mongo_output_key: output key is missing "
             "(letters, digits, _ and - only, at most 100 characters)"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("text, problem", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_it_refuses_a_bad_file_and_writes_nothing(demo_dataset, write_definition, db_counts, text, problem):
    path = write_definition(text())
    before = db_counts()

    with pytest.raises(CommandError) as caught:
        run_import(path, "--dataset", "demo")

    assert str(caught.value) == f"{path}: {problem()}"
    assert db_counts() == before


@pytest.mark.django_db
@pytest.mark.parametrize("text, problem", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_a_refused_replace_leaves_the_old_campaign_as_it_was(demo_dataset, write_definition, campaign_snapshot,
                                                           text, problem):
    run_import(EXAMPLES / "wb97mv.yaml", "--dataset", "demo")
    before = campaign_snapshot("wb97mv")

    with pytest.raises(CommandError):
        run_import(write_definition(text()), "--dataset", "demo", "--replace")

    assert campaign_snapshot("wb97mv") == before


@pytest.mark.django_db
def test_it_refuses_a_file_that_names_no_dataset(demo_dataset, db_counts):
    before = db_counts()

    with pytest.raises(CommandError) as caught:
        run_import(EXAMPLES / "wb97mv.yaml")

    assert str(caught.value) == (f"{EXAMPLES / 'wb97mv.yaml'}: no dataset given: name one in the file "
                                 "(dataset: NAME) or when importing (--dataset NAME)")
    assert db_counts() == before


@pytest.mark.django_db
def test_it_refuses_a_dataset_that_does_not_exist(demo_dataset, other_dataset, db_counts):
    before = db_counts()

    with pytest.raises(CommandError) as caught:
        run_import(EXAMPLES / "wb97mv.yaml", "--dataset", "dmeo")

    assert str(caught.value) == f"{EXAMPLES / 'wb97mv.yaml'}: dataset: no dataset named 'dmeo' (known: demo, other)"
    assert db_counts() == before


@pytest.mark.django_db
def test_it_refuses_an_existing_name_without_replace(demo_dataset, write_definition, campaign_snapshot, db_counts):
    run_import(EXAMPLES / "wb97mv.yaml", "--dataset", "demo")
    before, rows = campaign_snapshot("wb97mv"), db_counts()
    path = write_definition(changed("job_timeout: 15000", "job_timeout: 200"))

    with pytest.raises(CommandError) as caught:
        run_import(path, "--dataset", "demo")

    assert str(caught.value) == (f"{path}: campaign: a campaign named 'wb97mv' already exists; "
                                 "import with replace (--replace) to overwrite it")
    assert (campaign_snapshot("wb97mv"), db_counts()) == (before, rows)


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["running", "paused"])
def test_it_refuses_to_replace_a_running_or_paused_campaign(demo_dataset, campaign_snapshot, state):
    run_import(EXAMPLES / "wb97mv.yaml", "--dataset", "demo")
    Campaign.objects.filter(name="wb97mv").update(state=state)
    before = campaign_snapshot("wb97mv")

    with pytest.raises(CommandError) as caught:
        run_import(EXAMPLES / "wb97mv.yaml", "--dataset", "demo", "--replace")

    assert str(caught.value) == (f"{EXAMPLES / 'wb97mv.yaml'}: campaign: campaign 'wb97mv' is {state}; only a "
                                 "campaign in draft, done, failed, cancelled can be replaced (pause is not enough)")
    assert campaign_snapshot("wb97mv") == before


@pytest.mark.django_db
def test_it_refuses_a_file_it_cannot_read(tmp_path):
    with pytest.raises(CommandError) as caught:
        run_import(tmp_path / "missing.yaml")

    assert str(caught.value) == (f"{tmp_path / 'missing.yaml'}: cannot read the file: "
                                 f"[Errno 2] No such file or directory: '{tmp_path / 'missing.yaml'}'")


def test_the_command_exits_non_zero_with_the_message_on_stderr(write_definition, tmp_path):
    path = write_definition(changed("htrq.htrun.parser.orca.total_energy", "orca.totl_energy"))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "HTPORTAL_VAR_DIR": str(tmp_path / "var")}

    result = subprocess.run([sys.executable, "manage.py", "import_campaign", str(path), "--dataset", "demo"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert result.stderr == (f"CommandError: {path}: campaign_config.args[0] (wb97md3bj): unknown parser "
                             f"'orca.totl_energy' (known: {KNOWN_PARSERS})\n")
    assert result.stdout == ""


# --- hostile files: alias bombs, non-finite numbers -------------------------------------------

LAUGHS = "".join(
    f"    l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9) if n else ', '.join(['lol'] * 9)}]\n"
    for n in range(10))


@pytest.mark.django_db
def test_a_billion_laughs_file_is_refused_fast_and_small(write_definition, demo_dataset):
    import time
    import tracemalloc

    path = write_definition(changed("    wb97mv.wb97md3bj: null\n", LAUGHS))
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(CommandError) as caught:
            run_import(path, "--dataset", "demo")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (f"{path}: the document has more than 100,000 YAML nodes with "
                                 "its aliases expanded (each use of an alias counts its whole "
                                 "value), over the limit (HTPORTAL_YAML_MAX_NODES)")
    assert time.monotonic() - started < 5
    assert peak < 50 * 1024 * 1024
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_a_file_nested_past_the_depth_limit_is_refused(write_definition, demo_dataset):
    path = write_definition(changed("    wb97mv.wb97md3bj: null\n",
                                    "    x: " + "[" * 100 + "]" * 100 + "\n"))
    with pytest.raises(CommandError) as caught:
        run_import(path, "--dataset", "demo")
    assert str(caught.value) == (f"{path}: line 26, column 69: nested deeper than the limit of 64 "
                                 "(HTPORTAL_MAX_JSON_DEPTH)")


@pytest.mark.django_db
@pytest.mark.parametrize("value", [".inf", "-.Inf", ".NaN"])
def test_a_non_finite_number_is_refused_naming_its_field(write_definition, demo_dataset, value):
    path = write_definition(changed("  job_timeout: ", f"  job_timeout: {value}\n  # was: "))
    with pytest.raises(CommandError) as caught:
        run_import(path, "--dataset", "demo")
    spelled = {".inf": ".inf", "-.Inf": "-.inf", ".NaN": ".nan"}[value]
    assert str(caught.value) == (f"{path}: campaign_config.job_timeout: {spelled} is not a finite "
                                 "number (.inf, -.inf and .nan are not allowed)")
    assert not Campaign.objects.exists()
