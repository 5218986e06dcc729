"""CPU-hour accounting from the task ledger: core-hours per campaign, host and user, over time,
and what failures cost.

Where the numbers come from, and what they do not hold:
- `Task.cpu_s` is the CPU time (user + system, summed over the task's arg sets and programs)
  of the task's LAST delivered attempt: the collector overwrites it on every result. A task
  that failed and then succeeded counts only the successful attempt; the CPU of attempts that
  were retried is not on the ledger. "Cost of failures" is therefore the CPU of tasks that
  ended `failed` (their last attempt), by error class.
- A core-hour is 3600 CPU seconds.
- The host is `Task.host` (the host of the last result) when set, else `Task.worker` (older
  collectors wrote the host there).
- Pools are not recorded: the scaler's workers are named HOST.PID.RANDOM (rq's default) and
  the ledger keeps no pool, so costs are attributed per host, not per pool.

Every function is a few GROUP BY queries over the tasks of the campaigns the user may see
(the ledger is indexed by campaign); nothing is cached, so nothing goes stale. The per-day
series is bounded to the last `days` days through the (state, finished_at) index.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone as dt_timezone

from django.db.models import Case, CharField, Count, F, Func, Q, QuerySet, Sum, When
from django.utils import timezone

from campaigns.models import Campaign, Task
from campaigns.services.ownership import campaigns_visible

SECONDS_PER_CORE_HOUR = 3600.0
HOSTS_SHOWN = 50
DEFAULT_DAYS = 30
MAX_DAYS = 366
ENDED = (Task.State.DONE, Task.State.FAILED)


def core_hours(cpu_s: float | None) -> float:
    return (cpu_s or 0.0) / SECONDS_PER_CORE_HOUR


def _host() -> Case:
    """The host a task ran on: Task.host, else Task.worker (see the module's docstring)."""
    return Case(When(host="", then=F("worker")), default=F("host"), output_field=CharField())


@dataclass
class CostRow:
    """One line of a cost table: a campaign, a host or a user."""

    name: str
    core_hours: float = 0.0
    tasks: int = 0  # tasks with CPU time on the ledger
    failed_core_hours: float = 0.0
    failed_tasks: int = 0

    @property
    def failed_share(self) -> float | None:
        return self.failed_core_hours / self.core_hours if self.core_hours else None


@dataclass
class Accounting:
    total: CostRow
    campaigns: list[CostRow] = field(default_factory=list)
    hosts: list[CostRow] = field(default_factory=list)
    hosts_more: bool = False  # more hosts than HOSTS_SHOWN
    users: list[CostRow] = field(default_factory=list)
    failures: list[CostRow] = field(default_factory=list)  # by error class
    days: list[tuple[date, float, float]] = field(default_factory=list)  # day, all, failed
    days_span: int = DEFAULT_DAYS

    def series(self) -> dict:
        """The per-day chart's data: epoch seconds of each day (UTC midnight), core-hours."""
        return {"days": [int(datetime(d.year, d.month, d.day).timestamp()) for d, _, _ in
                         self.days],
                "core_hours": [round(all_, 6) for _, all_, _ in self.days],
                "failed_core_hours": [round(failed, 6) for _, _, failed in self.days]}


def _sums(tasks: QuerySet[Task], *keys) -> list[dict]:
    """CPU seconds and counts of `tasks` grouped by `keys`, failed ones apart."""
    failed = Q(state=Task.State.FAILED)
    return list(tasks.filter(cpu_s__isnull=False).order_by().values(*keys).annotate(
        cpu=Sum("cpu_s"), n=Count("pk"),
        failed_cpu=Sum("cpu_s", filter=failed), failed_n=Count("pk", filter=failed)))


def _row(name: str, sums: dict) -> CostRow:
    return CostRow(name=name, core_hours=core_hours(sums["cpu"]), tasks=sums["n"],
                   failed_core_hours=core_hours(sums["failed_cpu"]),
                   failed_tasks=sums["failed_n"])


def _add(row: CostRow, other: CostRow) -> None:
    row.core_hours += other.core_hours
    row.tasks += other.tasks
    row.failed_core_hours += other.failed_core_hours
    row.failed_tasks += other.failed_tasks


def campaign_cost(*, campaign: Campaign) -> dict:
    """What a campaign has cost so far, for campaign_status and the API:

    {"core_hours", "tasks_with_cpu", "failed_core_hours", "failed_tasks",
     "failures_by_error_class": {class: core-hours}} — one GROUP BY over its tasks.
    """
    rows = _sums(campaign.tasks.all(), "state", "error_class")
    total = CostRow(name=campaign.name)
    by_class: dict[str, float] = {}
    for sums in rows:
        _add(total, _row(campaign.name, sums))
        if sums["failed_n"]:
            name = sums["error_class"] or "unknown"
            by_class[name] = by_class.get(name, 0.0) + core_hours(sums["failed_cpu"])
    return {"core_hours": total.core_hours, "tasks_with_cpu": total.tasks,
            "failed_core_hours": total.failed_core_hours, "failed_tasks": total.failed_tasks,
            "failures_by_error_class": dict(sorted(by_class.items(),
                                                   key=lambda item: -item[1]))}


def campaign_accounting(*, campaign: Campaign) -> Accounting:
    """The campaign page's section: totals, per host, failures by class (no per-day chart)."""
    return _accounting(Task.objects.filter(campaign=campaign), names={campaign.pk: campaign},
                       days=0)


def accounting_visible(*, user, days: int = DEFAULT_DAYS, now: datetime | None = None
                       ) -> Accounting:
    """The /dashboard/accounting/ page: every campaign `user` may see (staff: all)."""
    campaigns = {campaign.pk: campaign for campaign in campaigns_visible(user=user)}
    tasks = Task.objects.all() if user.is_staff else Task.objects.filter(
        campaign__owner=user)
    return _accounting(tasks, names=campaigns, days=days, now=now)


def _accounting(tasks: QuerySet[Task], *, names: dict[int, Campaign], days: int,
                now: datetime | None = None) -> Accounting:
    """One GROUP BY (campaign, error class, host) over `tasks` makes every table; the per-day
    series is a second one over the tasks that ended within `days`."""
    days = max(0, min(int(days), MAX_DAYS))
    result = Accounting(total=CostRow(name="total"), days_span=days)
    by_campaign: dict[int, CostRow] = {}
    by_class: dict[str, CostRow] = {}
    by_host: dict[str, CostRow] = {}
    for sums in _sums(tasks.annotate(run_host=_host()), "campaign_id", "error_class",
                      "run_host"):
        campaign = names.get(sums["campaign_id"])
        if campaign is None:
            continue
        row = _row(campaign.name, sums)
        _add(by_campaign.setdefault(campaign.pk, CostRow(name=campaign.name)), row)
        host = sums["run_host"] or "(unknown)"
        _add(by_host.setdefault(host, CostRow(name=host)), row)
        _add(result.total, row)
        if sums["failed_n"]:
            name = sums["error_class"] or "unknown"
            failed = CostRow(name=name, core_hours=row.failed_core_hours,
                             tasks=row.failed_tasks, failed_core_hours=row.failed_core_hours,
                             failed_tasks=row.failed_tasks)
            _add(by_class.setdefault(name, CostRow(name=name)), failed)
    result.campaigns = sorted(by_campaign.values(), key=lambda row: (-row.core_hours, row.name))
    result.failures = sorted(by_class.values(), key=lambda row: (-row.core_hours, row.name))
    hosts = sorted(by_host.values(), key=lambda row: (-row.core_hours, row.name))
    result.hosts, result.hosts_more = hosts[:HOSTS_SHOWN], len(hosts) > HOSTS_SHOWN
    users: dict[str, CostRow] = {}
    for pk, row in by_campaign.items():
        owner = names[pk].owner
        name = owner.get_username() if owner else "(no owner)"
        _add(users.setdefault(name, CostRow(name=name)), row)
    result.users = sorted(users.values(), key=lambda row: (-row.core_hours, row.name))
    if days:
        result.days = _per_day(tasks, days=days, now=now or timezone.now())
    return result


class _Day(Func):
    """The UTC day of a timestamp as text "YYYY-MM-DD": SQLite stores UTC text, so its first
    ten characters (TruncDate calls a Python function per row there, four times slower)."""

    output_field = CharField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="SUBSTR(%(expressions)s, 1, 10)",
                           **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection,
                           template="TO_CHAR(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
                           **extra)


def _per_day(tasks: QuerySet[Task], *, days: int, now: datetime) -> list[tuple[date, float,
                                                                               float]]:
    """Core-hours of the tasks that ended on each of the last `days` days (UTC), gaps as 0."""
    first = (now - timedelta(days=days - 1)).date()
    start = datetime(first.year, first.month, first.day, tzinfo=dt_timezone.utc)
    rows = (tasks.filter(state__in=ENDED, finished_at__gte=start, cpu_s__isnull=False)
            .annotate(day=_Day("finished_at")).order_by().values("day")
            .annotate(cpu=Sum("cpu_s"),
                      failed_cpu=Sum("cpu_s", filter=Q(state=Task.State.FAILED))))
    by_day = {date.fromisoformat(row["day"]): (core_hours(row["cpu"]),
                                               core_hours(row["failed_cpu"])) for row in rows}
    return [(first + timedelta(days=n), *by_day.get(first + timedelta(days=n), (0.0, 0.0)))
            for n in range(days)]
