"""Campaign-side fixtures: datasets, the example job definition files, database snapshots."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.forms.models import model_to_dict

from campaigns.models import ArgSet, Campaign, Dataset

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
VINA_FIXTURE = REPO / "tests" / "fixtures" / "vina" / "debian_testdata_seed42"


@pytest.fixture
def demo_dataset(db) -> Dataset:
    return Dataset.objects.create(name="demo", description="the demo molecules")


@pytest.fixture
def other_dataset(db) -> Dataset:
    return Dataset.objects.create(name="other")


@pytest.fixture
def write_definition(tmp_path):
    """write_definition(text, name="bad.yaml") -> the path of a job definition file in tmp_path."""
    def write(text: str, name: str = "bad.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


@pytest.fixture
def vina_definition(tmp_path) -> Path:
    """A Vina campaign whose receptor is a path next to the file (the Debian test data)."""
    shutil.copy(VINA_FIXTURE / "protein.pdbqt", tmp_path / "protein.pdbqt")
    path = tmp_path / "vina.yaml"
    path.write_text(
        "campaign: dock1\n"
        "dataset: demo\n"
        "campaign_config:\n"
        "  func_name: vina.dock\n"
        "  job_timeout: 1200\n"
        "  args:\n"
        "    - name: site1\n"
        "      receptor: protein.pdbqt\n"
        "      center: [11, 90.5, 57.5]\n"
        "      size: [22, 24, 28]\n"
        "      exhaustiveness: 4\n"
        "      seed: 42\n"
        "      parsers:\n"
        "        stdout: [vina.affinities]\n"
        "      keep_files:\n"
        "        out.pdbqt: '{id}_site1.pdbqt'\n"
        "  kwargs:\n"
        "    mongo_output_key: vina\n"
        "submit:\n"
        "  queue: vina:low\n"
    )
    return path


@pytest.fixture
def db_counts():
    """db_counts(using="default") -> rows of Campaign, ArgSet and Dataset, to compare around a refusal."""
    def count(using: str = "default") -> dict:
        return {model.__name__: model.objects.using(using).count()
                for model in (Campaign, ArgSet, Dataset)}
    return count


@pytest.fixture
def campaign_snapshot():
    """campaign_snapshot(name, using="default") -> everything stored about one campaign."""
    def take(name: str, using: str = "default") -> dict:
        campaign = Campaign.objects.using(using).get(name=name)
        return {
            "campaign": {**model_to_dict(campaign), "updated_at": campaign.updated_at},
            "arg_sets": list(ArgSet.objects.using(using).filter(campaign=campaign)
                             .order_by("position").values()),
        }
    return take
