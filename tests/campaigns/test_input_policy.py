"""Program inputs are validated, not trusted: each attack on ORCA's input language, xtb's command
line and Vina's receptor name is refused at the portal, naming the directive, unless a staff
user marked the campaign trusted (docs/definitions.md)."""
from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from campaigns.admin.campaigns import CampaignAdmin
from campaigns.errors import DefinitionError
from campaigns.models import ArgSet, Campaign
from campaigns.services.definitions import campaign_definition_parse, campaign_import
from campaigns.services.definition_schema import check_parameters
from campaigns.services.input_policy import (
    InputPolicyError,
    TrustError,
    campaign_inputs_check,
    campaign_trust_check,
    orca_route_check,
    user_may_trust,
    xtb_flags_check,
)
from tests.campaigns.conftest import EXAMPLES
from tests.campaigns.test_admin_campaigns import campaign_form

TRUST = "allowed only in a campaign a staff user marked trusted"
ORCA = """\
campaign: wb97mv
dataset: demo
campaign_config:
  func_name: orca.sequential
  args:
    - name: wb97mv
      route: {route}
  kwargs:
    mongo_output_key: wb97mv
"""
XTB = """\
campaign: xtb1
dataset: demo
campaign_config:
  func_name: xtb.run
  args:
    - name: gfn2
      flags: {flags}
  kwargs:
    mongo_output_key: xtb
"""
VINA = """\
campaign: dock1
dataset: demo
campaign_config:
  func_name: vina.dock
  args:
    - name: site1
      receptor: {{name: {name}, content: "ATOM  1"}}
      center: {center}
      size: {size}
  kwargs:
    mongo_output_key: vina
"""


def orca(route: str) -> str:
    indented = "\n".join("        " + line for line in route.splitlines())
    return ORCA.format(route="|\n" + indented)


def parse(text: str, trusted: bool = False):
    return campaign_definition_parse(text=text, source="def.yaml", trusted=trusted)


def refusal(text: str) -> str:
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    return str(caught.value)


# --- ORCA ------------------------------------------------------------------------------------

def test_it_names_the_directive_the_arg_set_and_who_may_allow_it():
    assert refusal(orca("! wB97M-V def2-TZVP ExtOpt\n%method ProgExt \"/usr/bin/nc\" end")) == (
        "def.yaml: campaign_config.args[0] (wb97mv): ORCA directive 'ExtOpt' starts an external "
        f"program; {TRUST}")


# (route, the directive the message names, what it does)
DANGEROUS = [
    ("! B3LYP ExtOpt", "ExtOpt", "starts an external program"),
    ("%method\n  ProgExt \"wrapper\"\nend", "ProgExt", "starts an external program"),
    ("%method Ext_Params \"--model x\" end", "Ext_Params", "passes arguments to an external program"),
    ('%compound "umbrella.cmp"', "%compound", "runs a Compound script"),
    ("%Compound\n  Sys_Cmd(\"curl evil\");\nend", "%Compound", "runs a Compound script"),
    ("! B3LYP NBO", "NBO", "starts the external NBO program"),
    ("! XTB", "XTB", "starts the external xtb program"),
    ("! QM/XTB", "QM/XTB", "starts the external xtb program"),
    ("! B3LYP MORead\n%moinp \"old.gbw\"", "MORead", "reads orbitals from a file"),
    ('%moinp "old.gbw"', "%moinp", "reads orbitals from a file"),
    ('%scf Guess MORead MOInp "old.gbw" end', "MORead", "reads orbitals from a file"),
    ('%scf MOInp "old.gbw" end', "MOInp", "reads orbitals from a file"),
    ('%basis GTOName "my.bas" end', "GTOName", "names a file to read"),
    ('%basis GTOAuxJName "my.bas" end', "GTOAuxJName", "names a file to read"),
    ('%basis GetBasis "my.bas" end', "GetBasis", "reads a basis set from a file"),
    ('%geom InHessName "ts.hess" end', "InHessName", "names a file to read"),
    ('%base "elsewhere"', "%base", "moves the calculation's files"),
    ("%coords CTyp xyzfile end", "%coords", "is not an ORCA block this portal allows"),
    ("* xyzfile 0 1 mol.xyz", "*", "gives coordinates"),
    ("$new_job\n! PBE", "$new_job", "starts another job"),
    ("%plots Format Cube end", "%plots", "is not an ORCA block this portal allows"),
    ("%qmmm ORCAFFFilename \"x.prms\" end", "%qmmm", "is not an ORCA block this portal allows"),
]


@pytest.mark.parametrize("route, directive, why", DANGEROUS, ids=[d[1] for d in DANGEROUS])
def test_it_refuses_a_directive_that_starts_a_program_or_reads_a_file(route, directive, why):
    message = refusal(orca(route))

    assert f"ORCA directive '{directive}' {why}" in message and message.endswith(TRUST)


@pytest.mark.parametrize("route, directive", [
    ("! extopt", "extopt"),
    ("! EXTOPT", "EXTOPT"),
    ("!ExtOpt", "ExtOpt"),
    ("%METHOD PROGEXT \"x\" END", "PROGEXT"),
    ("% compound \"a.cmp\"", "%compound"),
    ("! B3LYP # a comment\n! ExtOpt", "ExtOpt"),
    ("! B3LYP #closed# ExtOpt", "ExtOpt"),  # text after a second '#' is live for ORCA
    ("%method ProgExt=\"x\" end", "ProgExt"),
    ("%method ProgExt \"x\"; end", "ProgExt"),
    ('! "ExtOpt"', "ExtOpt"),
    ("%scf maxiter 5 end %method ProgExt \"x\" end", "ProgExt"),
    ("%geom Constraints {B 0 1 C} end end\n%method progext \"x\" end", "progext"),
])
def test_case_comments_and_layout_do_not_hide_a_directive(route, directive):
    assert f"ORCA directive '{directive}'" in refusal(orca(route))


@pytest.mark.parametrize("route, problem", [
    ('%basis AuxJ "/etc/passwd" end', "'/etc/passwd' is an absolute path"),
    ("%basis AuxJ /etc/passwd end", "'/etc/passwd' is an absolute path"),
    ('%basis AuxJ "../../secret" end', "'../../secret' climbs out of the scratch directory"),
    ('%basis AuxJ "def2/../../x" end', "'def2/../../x' climbs out"),
    ('%basis AuxJ "~/x" end', "'~/x' is an absolute path"),
    ('%basis AuxJ "C:\\\\x" end', "is an absolute path"),
    ('%basis AuxJ "$HOME/x" end', "holds '$' or '`'"),
    ("%pal nprocs 4 end x%compound", "'%' may only start a block name"),
    ('! B3LYP "not closed', "is not closed on its line"),
    ('! B3LYP "a#b"', "may not hold '#'"),
])
def test_it_refuses_paths_out_of_the_scratch_directory_and_ambiguous_text(route, problem):
    assert problem in refusal(orca(route))


def test_the_example_route_and_ordinary_blocks_pass():
    definition = parse((EXAMPLES / "wb97mv.yaml").read_text())
    orca_route_check(
        "! B3LYP D3BJ def2-SVP def2/J RIJCOSX Opt Freq CPCM(water) TightSCF  # a comment\n"
        "%maxcore 3000\n%pal nprocs 4 end\n"
        "%basis AuxJ \"def2/J\" end\n"
        "%geom MaxIter 100 Constraints {B 0 1 C} end end\n"
        "%output XYZFile true end\n%tddft nroots 5 end\n%cpcm epsilon 80 end\n")

    assert definition.arg_sets[0].parameters["route"].startswith("! wB97m-d3bj")


def test_a_trusted_parse_allows_what_an_untrusted_one_refuses():
    text = orca("! ExtOpt Opt\n%method ProgExt \"/opt/wrappers/oet_mopac\" end")

    definition = parse(text, trusted=True)

    assert definition.trusted and "ProgExt" in definition.arg_sets[0].parameters["route"]


# --- xtb ---------------------------------------------------------------------------------

def test_allowed_xtb_flags_pass():
    definition = parse(XTB.format(flags=[
        "--alpb", "water", "--acc", "0.5", "--etemp", "300", "--iterations", "500",
        "--opt", "tight", "--gbsa", "thf", "reference", "--json", "--parallel", "2"]))

    assert definition.arg_sets[0].parameters["flags"][:2] == ["--alpb", "water"]


@pytest.mark.parametrize("flags, message", [
    (["--input", "/etc/passwd"], "xtb flag '--input' is not an option this portal allows"),
    (["-I", "md.inp"], "xtb flag '-I' is not an option this portal allows"),
    (["--namespace", "x"], "xtb flag '--namespace' is not an option this portal allows"),
    (["--copy"], "xtb flag '--copy' is not an option this portal allows"),
    (["--restart"], "xtb flag '--restart' is not an option this portal allows"),
    (["--vparam", "param.txt"], "xtb flag '--vparam' is not an option this portal allows"),
    (["-P", "4"], "xtb flag '-P' is not an option this portal allows"),
    (["--chrg", "1"], "xtb flag '--chrg': set the parameter 'charge' instead"),
    (["--uhf", "2"], "xtb flag '--uhf': set the parameter 'uhf' instead"),
    (["--alpb", "../water"], "xtb flag '--alpb' needs a solvent name (got '../water'"),
    (["--alpb", "/tmp/x"], "xtb flag '--alpb' needs a solvent name (got '/tmp/x'"),
    (["--alpb=water"], "xtb flag '--alpb=water': give the option and its value as two words"),
    (["--etemp", "nan"], "xtb flag '--etemp' 'nan' is out of range"),
    (["--acc", "inf"], "xtb flag '--acc' 'inf' is out of range"),
    (["--gfn", "3"], "xtb flag '--gfn' '3' is out of range (0 to 2)"),
    (["--iterations"], "xtb flag '--iterations' needs a number"),
    (["water"], "xtb flag 'water' is not an option this portal allows"),
    (["--opt", "/etc/x"], "xtb flag '/etc/x' is not an option this portal allows"),
])
def test_xtb_flags_outside_the_allowlist_are_refused(flags, message):
    assert message in refusal(XTB.format(flags=flags))


def test_a_trusted_campaign_may_pass_any_xtb_flags():
    xtb_flags_check(["--alpb", "water"])  # the allowlist itself

    definition = parse(XTB.format(flags=["--input", "md.inp"]), trusted=True)

    assert definition.arg_sets[0].parameters["flags"] == ["--input", "md.inp"]


# --- Vina ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../protein.pdbqt", "/etc/protein.pdbqt", "sub/protein.pdbqt",
                                  ".hidden.pdbqt", "-x.pdbqt", "out.pdbqt", "ligand.pdbqt",
                                  "protein.pdb", "'p q.pdbqt'"])
def test_a_receptor_name_must_be_a_plain_file_name(name):
    text = VINA.format(name=name, center="[0, 0, 0]", size="[20, 20, 20]")

    assert "must be a plain file name ending in .pdbqt" in refusal(text)


def test_a_receptor_name_is_checked_in_a_trusted_campaign_too():
    text = VINA.format(name="../protein.pdbqt", center="[0, 0, 0]", size="[20, 20, 20]")

    with pytest.raises(DefinitionError, match="must be a plain file name"):
        parse(text, trusted=True)


@pytest.mark.parametrize("center, size, message", [
    # The YAML loader refuses a non-finite number first, naming its place.
    ("[.nan, 0, 0]", "[20, 20, 20]", "campaign_config.args[0].center[0]: .nan is not a finite "
                                     "number"),
    ("[0, 0, 0]", "[.inf, 20, 20]", "campaign_config.args[0].size[0]: .inf is not a finite "
                                    "number"),
    ("[1e9, 0, 0]", "[20, 20, 20]", "of at most 10000 in size"),
    ("[0, 0, 0]", "[20, 20, 1000]", "of at most 500 in size"),
])
def test_vina_numbers_must_be_finite_and_in_range(center, size, message):
    assert message in refusal(VINA.format(name="protein.pdbqt", center=center, size=size))


@pytest.mark.parametrize("center, size, message", [
    ([float("nan"), 0, 0], [20, 20, 20], "center [nan, 0, 0] must be a list of 3 finite numbers"),
    ([0, 0, 0], [float("inf"), 20, 20], "size [inf, 20, 20] must be a list of 3 finite positive"),
])
def test_the_parameter_check_refuses_non_finite_numbers_on_its_own(center, size, message):
    # What reaches the schema from another door than YAML (the admin's JSON field, say).
    with pytest.raises(DefinitionError, match=re.escape(message)):
        check_parameters("vina.dock", {"receptor": {"name": "p.pdbqt", "content": "ATOM"},
                                       "center": center, "size": size})


# --- who may trust --------------------------------------------------------------------------

@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user("sam", is_staff=True)


def test_only_active_staff_or_superusers_may_trust(alice, staff):
    root = User(username="root", is_superuser=True, is_active=True)
    retired = User(username="old", is_staff=True, is_active=False)

    assert [user_may_trust(u) for u in (alice, staff, root, retired, None)] == [
        False, True, True, False, False]
    campaign_trust_check(user=alice, trusted=False)  # not asking is always fine
    with pytest.raises(TrustError) as caught:
        campaign_trust_check(user=alice, trusted=True)
    assert str(caught.value) == "only a staff user may mark a campaign trusted (alice is not staff)"


def test_staff_import_a_trusted_campaign_that_allows_its_directives(demo_dataset, staff):
    definition = parse(orca("! ExtOpt\n%method ProgExt \"oet_mopac\" end"), trusted=True)

    campaign = campaign_import(definition=definition, owner=staff)

    assert Campaign.objects.get(pk=campaign.pk).trusted is True
    arg_set = ArgSet.objects.get(campaign=campaign)
    arg_set.full_clean()  # the model's own check agrees: the campaign is trusted


def test_a_non_staff_user_cannot_import_a_trusted_campaign(demo_dataset, alice, db_counts):
    definition = parse(orca("! ExtOpt"), trusted=True)
    before = db_counts()

    with pytest.raises(TrustError) as caught:
        campaign_import(definition=definition, owner=alice)

    assert str(caught.value) == ("def.yaml: campaign: only a staff user may mark a campaign "
                                 "trusted (alice is not staff)")
    assert db_counts() == before


def test_an_untrusted_import_clears_the_flag_of_a_replaced_campaign(demo_dataset, staff):
    campaign_import(definition=parse(orca("! ExtOpt"), trusted=True), owner=staff)

    campaign = campaign_import(definition=parse(orca("! PBE def2-SVP")), replace=True)

    assert Campaign.objects.get(pk=campaign.pk).trusted is False


def test_the_model_refuses_a_directive_unless_the_campaign_is_trusted(demo_dataset):
    campaign = campaign_import(definition=parse(orca("! PBE def2-SVP")))
    arg_set = ArgSet.objects.get(campaign=campaign)
    arg_set.parameters = {"route": "! PBE\n%method ProgExt \"/bin/sh\" end"}

    with pytest.raises(ValidationError) as caught:
        arg_set.full_clean()
    assert caught.value.message_dict["parameters"] == [
        f"ORCA directive 'ProgExt' starts an external program; {TRUST}"]

    campaign.trusted = True  # as a staff user's admin form would save it
    arg_set.campaign = campaign
    arg_set.full_clean()


def test_the_command_marks_a_campaign_trusted_with_trusted(demo_dataset, write_definition):
    path = write_definition(orca("! ExtOpt\n%method ProgExt \"oet_mopac\" end"), "ext.yaml")

    with pytest.raises(CommandError, match="ORCA directive 'ExtOpt'"):
        call_command("import_campaign", str(path), stdout=StringIO())
    call_command("import_campaign", str(path), "--trusted", stdout=StringIO())

    assert Campaign.objects.get(name="wb97mv").trusted is True


def test_the_admin_lets_only_users_who_may_trust_edit_the_flag(alice, staff):
    from django.contrib import admin

    model_admin = CampaignAdmin(Campaign, admin.site)
    request = RequestFactory().get("/")

    request.user = staff
    assert "trusted" not in model_admin.get_readonly_fields(request)
    request.user = alice
    assert "trusted" in model_admin.get_readonly_fields(request)
    assert "trusted" in model_admin.list_display


def test_a_route_too_long_is_refused():
    with pytest.raises(InputPolicyError, match="more than 20000"):
        orca_route_check("! PBE\n" + "%scf maxiter 5 end\n" * 2000)


def test_campaign_inputs_check_rechecks_a_saved_campaign_under_its_current_trust(demo_dataset,
                                                                                staff):
    campaign = campaign_import(definition=parse(orca("! ExtOpt"), trusted=True), owner=staff)
    campaign_inputs_check(campaign=campaign)  # trusted: fine

    Campaign.objects.filter(pk=campaign.pk).update(trusted=False)  # a bulk update, no clean()
    campaign.refresh_from_db()

    with pytest.raises(InputPolicyError) as caught:
        campaign_inputs_check(campaign=campaign)
    assert str(caught.value) == ("campaign 'wb97mv': arg set 'wb97mv': ORCA directive 'ExtOpt' "
                                 f"starts an external program; {TRUST}")


@pytest.mark.parametrize("route, directive", [
    ("! PBE a:ExtOpt", "a:ExtOpt"),
    ("%scf maxiter 5 end * xyzfile 0 1 x.xyz", "*"),
])
def test_a_directive_inside_a_word_or_mid_line_is_found(route, directive):
    assert f"ORCA directive '{directive}'" in refusal(orca(route))


# --- the admin's add form, for real ------------------------------------------------------------

EXTOPT = {"route": "! ExtOpt\n%method ProgExt \"oet_mopac\" end"}


def test_the_admin_refuses_a_dangerous_route_in_an_untrusted_campaign(admin_client, demo_dataset,
                                                                      db_counts):
    form = campaign_form(demo_dataset)
    form["arg_sets-0-parameters"] = json.dumps(EXTOPT)
    before = db_counts()

    response = admin_client.post("/admin/campaigns/campaign/add/", form)

    assert response.context["inline_admin_formsets"][0].formset.errors == [
        {"parameters": [f"ORCA directive 'ExtOpt' starts an external program; {TRUST}"]}]
    assert db_counts() == before


def test_a_staff_user_ticking_trusted_in_the_admin_allows_the_route(admin_client, demo_dataset):
    form = campaign_form(demo_dataset)
    form["arg_sets-0-parameters"] = json.dumps(EXTOPT)
    form["trusted"] = "on"

    response = admin_client.post("/admin/campaigns/campaign/add/", form)

    assert response.status_code == 302
    campaign = Campaign.objects.get(name="hand-made")
    assert campaign.trusted and campaign.arg_sets.get().parameters == EXTOPT
