"""Labels a chemist gets right only if the reader does: SDF radicals by the MDL rule, and the
extended XYZ frames with extra columns read through ase's public reader."""
from __future__ import annotations

import io

import ase.io
import pytest

from campaigns.models import ArgSet, Campaign
from campaigns.molecules import Molecule, read_sdf, read_xyz
from campaigns.services.cloning import campaign_clone
from tests.pipeline.conftest import make_campaign, make_dataset  # noqa: F401

METHYLENE = """methylene
  hand-written

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.0900    0.0000    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.3600    1.0300    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
M  RAD  1   1   {rad}
M  END
$$$$
"""
METHYL = """methyl
  hand-written

  4  3  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.0800    0.0000    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.5400    0.9350    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.5400   -0.9350    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
  1  4  1  0
M  RAD  1   1   2
M  END
$$$$
"""


def one(items) -> Molecule:
    items = list(items)
    assert len(items) == 1 and isinstance(items[0], Molecule), items
    return items[0]


@pytest.mark.parametrize("rad, multiplicity", [(1, 1), (3, 3)])
def test_an_sdf_radical_follows_the_mdl_rule(rad, multiplicity):
    # M  RAD 1 is a singlet (a carbene with its two electrons paired), 3 a triplet.
    molecule = one(read_sdf(io.StringIO(METHYLENE.format(rad=rad))))
    assert molecule.input["multiplicity"] == multiplicity


def test_a_doublet_radical_is_a_doublet():
    assert one(read_sdf(io.StringIO(METHYL))).input["multiplicity"] == 2


def test_an_extxyz_frame_with_extra_columns_is_read_as_ase_reads_it():
    text = ('3\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-5.07 charge=0 id=w1\n'
            'O 0.0 0.0 0.117 0.1 0.2 0.3\nH 0.0 0.757 -0.467 0.0 0.0 0.0\n'
            'H 0.0 -0.757 -0.467 -0.1 -0.2 -0.3\n')
    molecule = one(read_xyz(io.StringIO(text)))
    frame = ase.io.read(io.StringIO(text), format="extxyz")
    assert molecule.input["coordinates"] == frame.positions.tolist()
    assert molecule.input["energy"] == frame.get_potential_energy()
    assert molecule.input["forces"] == frame.get_forces().tolist()


@pytest.mark.django_db
def test_a_clone_of_a_trusted_campaign_is_not_trusted(make_campaign):
    campaign = make_campaign(name="orca_trusted")
    Campaign.objects.filter(pk=campaign.pk).update(trusted=True)
    campaign.refresh_from_db()
    clone = campaign_clone(campaign=campaign)
    assert (campaign.trusted, clone.trusted) == (True, False)
    assert ArgSet.objects.filter(campaign=clone).count() == 1
