"""campaigns.bulk.rows_update_if, the collector's conditional ledger write, on SQLite and
PostgreSQL: it must tell which rows matched, since executemany reports only a total."""
from __future__ import annotations

import pytest

from campaigns.bulk import rows_update_if
from campaigns.models import Dataset

pytestmark = pytest.mark.django_db(databases=["default", "postgres"])


@pytest.mark.parametrize("alias", ["default", "postgres"])
def test_it_updates_every_row_that_still_holds_what_was_read(alias):
    rows = [Dataset.objects.using(alias).create(name=f"d{n}", description="old")
            for n in range(3)]
    for row in rows:
        row.description = "new"
    matched = rows_update_if(objects=rows, fields=["description"], using=alias,
                             expected=[{"description": ("old", "older")} for _ in rows])
    assert matched == [True, True, True]
    assert set(Dataset.objects.using(alias).values_list("description", flat=True)) == {"new"}


@pytest.mark.parametrize("alias", ["default", "postgres"])
def test_it_leaves_a_row_changed_meanwhile_and_says_which(alias):
    rows = [Dataset.objects.using(alias).create(name=f"d{n}", description="old")
            for n in range(3)]
    Dataset.objects.using(alias).filter(pk=rows[1].pk).update(description="theirs")
    for row in rows:
        row.description = "mine"
    matched = rows_update_if(objects=rows, fields=["description"], using=alias,
                             expected=[{"description": "old"} for _ in rows])
    assert matched == [True, False, True]
    assert list(Dataset.objects.using(alias).order_by("pk").values_list(
        "description", flat=True)) == ["mine", "theirs", "mine"]
