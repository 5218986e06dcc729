"""The project's own app config: start-up guards that hold in every portal process (gunicorn,
manage.py, tests), since Django runs `ready` before it serves or runs anything."""
from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


class HtportalConfig(AppConfig):
    name = "htportal"
    verbose_name = "htportal"

    def ready(self) -> None:
        from htportal.nopickle import check_rq_queues, forbid_pickle

        check_rq_queues(queues=settings.RQ_QUEUES, rq=settings.RQ)
        forbid_pickle()
