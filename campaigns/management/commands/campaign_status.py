"""Print where campaigns stand: tasks by state, rates, ETA, workers, failures, Redis memory."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from campaigns.dashboard.accounting import campaign_cost
from campaigns.models import Campaign
from campaigns.redis_connection import redis_connection
from campaigns.selectors import campaign_get, campaign_names
from campaigns.status import campaign_status


class Command(BaseCommand):
    help = ("Print each campaign's tasks by state, tasks/s over the last minute and ten minutes, "
            "ETA, live workers, failures by error class, Redis memory used and core-hours spent.")

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="one campaign (default: all of them)")
        parser.add_argument("--json", action="store_true", help="print JSON instead")

    def handle(self, *args, name, **options):
        campaigns = [self._campaign(name)] if name else list(Campaign.objects.order_by("name"))
        connection = redis_connection()
        statuses = [campaign_status(campaign=c, connection=connection) for c in campaigns]
        costs = [campaign_cost(campaign=c) for c in campaigns]
        if options["json"]:
            data = [{**s.as_dict(), "cost": cost} for s, cost in zip(statuses, costs)]
            self.stdout.write(_dumps(data[0] if name else data))
            return
        if not statuses:
            self.stdout.write("no campaigns")
        for status, cost in zip(statuses, costs):
            self.stdout.write("\n".join(status.lines() + [_cost_line(cost)]))

    @staticmethod
    def _campaign(name: str) -> Campaign:
        campaign = campaign_get(name=name)
        if campaign is None:
            known = ", ".join(campaign_names(limit=20)) or "none"
            raise CommandError(f"no campaign named {name!r} (known: {known})")
        return campaign


def _cost_line(cost: dict) -> str:
    """`  cost: 12.50 core-hours (3.00 on failed tasks)`, from the ledger's CPU seconds."""
    return (f"  cost: {cost['core_hours']:,.2f} core-hours ({cost['failed_core_hours']:,.2f} on "
            f"failed tasks; the last attempt of each task)")


def _dumps(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
