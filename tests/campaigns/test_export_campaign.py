"""manage.py export_campaign: YAML in the original layout that import_campaign reads back,
byte for byte the same after a round trip."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from campaigns.models import Campaign
from tests.campaigns.conftest import EXAMPLES

WB97MV_EXPORTED = """\
campaign: wb97mv
dataset: demo
campaign_config:
  func_name: orca.sequential
  job_timeout: 15000
  max_attempts: 3
  args:
    - name: wb97md3bj
      route: |
        ! wB97m-d3bj def2-tzvpp def2/j rijcosx engrad tightscf
        %elprop dipole true quadrupole true end
        %output PrintLevel mini Print[P_DFTD_GRAD] 1 end
        %scf maxiter 256 end
      parsers:
        stdout:
          - orca.total_energy
          - orca.gradient
          - orca.dipole
      keep_files:
        stdout: '{id}_wb97md3bj.out'
        orca.gbw: '{id}_wb97md3bj.gbw'
  kwargs:
    mongo_output_key: wb97mv
submit:
  query:
    wb97mv.wb97md3bj: null
  projection: []
  queue: orca:high
"""


def export(name: str) -> str:
    out = StringIO()
    call_command("export_campaign", name, stdout=out)
    return out.getvalue()


def import_(*args) -> None:
    call_command("import_campaign", *[str(a) for a in args], stdout=StringIO())


@pytest.mark.django_db
def test_it_exports_the_orca_example_in_its_own_layout(demo_dataset):
    import_(EXAMPLES / "wb97mv.yaml", "--dataset", "demo")

    assert export("wb97mv") == WB97MV_EXPORTED


@pytest.mark.django_db
@pytest.mark.parametrize("example", ["wb97mv.yaml", "xtb_gfn2.yaml", "vina"])
def test_export_import_export_gives_the_same_text(demo_dataset, vina_definition, tmp_path, example):
    source = vina_definition if example == "vina" else EXAMPLES / example
    import_(source, "--dataset", "demo")
    name = Campaign.objects.get().name
    first = export(name)
    exported = tmp_path / "exported.yaml"
    exported.write_text(first)
    Campaign.objects.filter(name=name).update(state=Campaign.State.DONE, notes="edited in the admin")

    import_(exported, "--replace")

    assert export(name) == first
    assert Campaign.objects.get(name=name).notes == ""


@pytest.mark.django_db
def test_it_keeps_notes_and_writes_coordinates_on_one_line(demo_dataset, vina_definition):
    import_(vina_definition)
    Campaign.objects.filter(name="dock1").update(notes="site 1 of 3\nsee the ELN, p. 42")

    text = export("dock1")

    assert "notes: |-\n  site 1 of 3\n  see the ELN, p. 42\ncampaign_config:\n" in text
    assert "      center: [11, 90.5, 57.5]\n      size: [22, 24, 28]\n" in text
    assert "        content: |\n          REMARK   4 XXXX COMPLIES WITH FORMAT V. 2.0\n" in text


@pytest.mark.django_db
def test_it_refuses_an_unknown_campaign_naming_the_known_ones(demo_dataset):
    import_(EXAMPLES / "wb97mv.yaml", "--dataset", "demo")

    with pytest.raises(CommandError) as caught:
        export("wb97")

    assert str(caught.value) == "no campaign named 'wb97' (known: wb97mv)"
