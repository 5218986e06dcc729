"""Submitting a campaign: one pending Task row for every selected record that has none yet.

The ledger is written in batches as the record store streams the selected ids, so memory stays
at one batch whatever the dataset's size. Job ids are deterministic (pipeline_keys.job_id) and
(campaign, record_id) is unique, so submitting twice, or two submits at once, add each record
once. Nothing here touches Redis: feeding (feeding.py) queues what the ledger holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Set

from django.db import connections, transaction
from django.utils import timezone

from campaigns.errors import ApplicationError
from campaigns.models import Campaign, Task
from campaigns.pipeline_keys import job_id
from campaigns.progress import Progress
from campaigns.selectors import campaign_arg_sets, campaign_get, campaign_names
from campaigns.stores import chunked, store_for
from workers.runtime import registry

SUBMIT_BATCH_SIZE = 5000
SUBMITTABLE_STATES = (Campaign.State.DRAFT, Campaign.State.RUNNING, Campaign.State.DONE,
                      Campaign.State.FAILED)
# The states a submit with work to do moves to running (a paused campaign keeps its pause).
STARTABLE_STATES = (Campaign.State.DRAFT, Campaign.State.DONE, Campaign.State.FAILED)
UNFINISHED_TASK_STATES = (Task.State.PENDING, Task.State.QUEUED, Task.State.RUNNING)


@dataclass
class SubmitReport:
    campaign: str
    selected: int = 0  # records the query selected and this run looked at
    added: int = 0  # new tasks (with dry_run: that would be added)
    already: int = 0  # selected records that had a task already
    queued: int = 0  # jobs fed to Redis right after (campaign_launch)
    dry_run: bool = False
    state: str = ""  # the campaign's state afterwards

    def line(self) -> str:
        """One line for a person: what was added, what was there already, what was queued."""
        if self.dry_run:
            return (f"{self.campaign}: {self.added:,} tasks would be added ({self.already:,} "
                    f"selected records already have one); dry run, nothing written")
        return (f"{self.campaign}: {self.added:,} tasks added ({self.already:,} selected records "
                f"already had one), {self.queued:,} jobs queued; campaign {self.state}")


def campaign_find(*, name: str) -> Campaign:
    """The campaign called `name`; the error names some that exist."""
    campaign = campaign_get(name=name)
    if campaign is None:
        known = ", ".join(campaign_names(limit=20)) or "none yet"
        raise ApplicationError(f"no campaign {name!r} (existing: {known})")
    return campaign


def campaign_submit_check(*, campaign: Campaign) -> None:
    """ApplicationError unless the campaign can be submitted: its state, function and arg sets."""
    if campaign.state not in SUBMITTABLE_STATES:
        hint = ("resume it instead" if campaign.state == Campaign.State.PAUSED
                else "import its definition again as a new campaign")
        raise ApplicationError(
            f"campaign {campaign.name} is {campaign.state}: only a campaign that is "
            f"{', '.join(SUBMITTABLE_STATES)} can be submitted ({hint})"
        )
    if campaign.function not in registry.task_names():
        raise ApplicationError(f"campaign {campaign.name}: unknown function {campaign.function!r} "
                               f"(known: {', '.join(registry.task_names())})")
    if not campaign_arg_sets(campaign=campaign).exists():
        raise ApplicationError(f"campaign {campaign.name} has no arg sets: there is nothing to run")


def campaign_submit(*, campaign: Campaign, limit: Optional[int] = None, dry_run: bool = False,
                    progress: Optional[Progress] = None) -> SubmitReport:
    """Add a pending task for each record the campaign's query selects that has none yet.

    Args:
        limit: add at most this many new tasks (records are taken in the store's id order).
        dry_run: count what would be added; write nothing.
        progress: updated with the number of selected records looked at; its total is set to
            the number the query selects when it has none.

    The campaign becomes running when it then has unfinished tasks (not with dry_run).
    """
    campaign.refresh_from_db(fields=["state"])  # the collector may have ended it meanwhile
    campaign_submit_check(campaign=campaign)
    if limit is not None and limit < 0:
        raise ApplicationError(f"limit must be 0 or more (got {limit})")
    store = store_for(campaign.dataset)
    if progress is not None and progress.total is None:
        progress.total = store.count(query=campaign.query)
    report = SubmitReport(campaign=campaign.name, dry_run=dry_run, state=campaign.state)
    # A first submit needs no look-up of existing tasks: there are none.
    had_tasks = campaign.tasks.exists()
    for ids in store.iter_ids(query=campaign.query, batch_size=SUBMIT_BATCH_SIZE):
        room = None if limit is None else limit - report.added
        if room == 0:
            break
        existing = _with_task(campaign=campaign, record_ids=ids) if had_tasks else set()
        looked_at, new = _take_new(ids, existing, room)
        if new and not dry_run:
            _tasks_create(campaign=campaign, record_ids=new)
        report.selected += looked_at
        report.added += len(new)
        report.already += looked_at - len(new)
        if progress is not None:
            progress.update(report.selected)
    if not dry_run:
        _campaign_start(campaign=campaign)
        report.state = campaign.state
    return report


def _take_new(ids: Sequence[str], existing: Set[str], room: Optional[int]) -> tuple[int, List[str]]:
    """(how many of `ids` were looked at, the new ones among them), stopping at `room` new."""
    if room is None:
        return len(ids), [record_id for record_id in ids if record_id not in existing]
    new: List[str] = []
    for position, record_id in enumerate(ids, start=1):
        if record_id not in existing:
            new.append(record_id)
            if len(new) == room:
                return position, new
    return len(ids), new


def _with_task(*, campaign: Campaign, record_ids: List[str]) -> Set[str]:
    """The ids among `record_ids` that have a task in the campaign (one query per few hundred)."""
    size = connections["default"].ops.bulk_batch_size(["record_id"], record_ids) or len(record_ids)
    tasks = Task.objects.filter(campaign=campaign)
    return {record_id for part in chunked(record_ids, size)
            for record_id in tasks.filter(record_id__in=part).values_list("record_id", flat=True)}


def _tasks_create(*, campaign: Campaign, record_ids: List[str]) -> None:
    """INSERT the tasks with one executemany; rows whose (campaign, record_id) exists are skipped.

    Not bulk_create: Django prepares every field of every row in Python and SQLite takes only
    999 parameters a statement, which made the ledger cost more per record than the enqueue
    itself. The column values come from the model, so a new field with a default needs nothing.
    """
    connection = connections["default"]
    now = timezone.now()
    template = Task(campaign=campaign, created_at=now, updated_at=now)
    fields = [field for field in Task._meta.concrete_fields if not field.primary_key]
    values = [field.get_db_prep_save(getattr(template, field.attname), connection)
              for field in fields]
    record_at = fields.index(Task._meta.get_field("record_id"))
    job_at = fields.index(Task._meta.get_field("job_id"))
    rows = []
    for record_id in record_ids:
        values[record_at] = record_id
        values[job_at] = job_id(campaign_id=campaign.pk, spec_version=campaign.spec_version,
                                record_id=record_id)
        rows.append(tuple(values))
    quote = connection.ops.quote_name
    # ON CONFLICT DO NOTHING (SQLite and PostgreSQL): a record given a task by a concurrent
    # submit is skipped, not an error.
    sql = (f"INSERT INTO {quote(Task._meta.db_table)} "
           f"({', '.join(quote(field.column) for field in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT DO NOTHING")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _campaign_start(*, campaign: Campaign) -> None:
    """Running, when there is work to do; a campaign with nothing left keeps its state.

    Conditional on the state in the database, never on `campaign.state` in memory: the collector
    may have marked the campaign done between our read and the tasks we just added, and a done
    campaign's pending tasks would never be fed.
    """
    if campaign.tasks.filter(state__in=UNFINISHED_TASK_STATES).exists():
        Campaign.objects.filter(pk=campaign.pk, state__in=STARTABLE_STATES).update(
            state=Campaign.State.RUNNING, updated_at=timezone.now())
    campaign.refresh_from_db(fields=["state"])
