"""Reads of records in SQL-stored datasets, through the query language (campaigns/query.py)."""
from __future__ import annotations

from django.db.models import QuerySet

from campaigns.errors import ApplicationError
from campaigns.models import Dataset, Record
from campaigns.query import compile_query


def records_matching(*, dataset: Dataset, query: dict, using: str = "default") -> QuerySet:
    """The dataset's records that `query` selects (QueryError if the query is unsupported)."""
    if dataset.store != Dataset.Store.SQL:
        raise ApplicationError(f"dataset {dataset.name!r} is stored in MongoDB; its records are "
                               "read through the MongoDB store, not SQL")
    condition = compile_query(query)
    return Record.objects.using(using).filter(dataset=dataset).filter(condition)


def records_count(*, dataset: Dataset, query: dict, using: str = "default") -> int:
    """How many of the dataset's records `query` selects."""
    return records_matching(dataset=dataset, query=query, using=using).count()
