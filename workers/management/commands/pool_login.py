"""Log in once to a pool's access point that asks for a password or one-time code (TOTP)."""
from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand, CommandError

from workers.models import WorkerPool
from workers.scaler.base import ScalerError
from workers.scaler.sessions import (pool_login, pool_login_status, pool_logout,
                                     pool_uses_session, session_describe)


def terminal_answer(prompt: str) -> str:
    """The person's answer, read from the terminal without echo; never stored or logged."""
    return getpass.getpass(prompt if prompt.endswith(" ") else prompt + " ")


class Command(BaseCommand):
    help = ("Open the SSH session (an OpenSSH ControlMaster) the scaler uses for a pool whose "
            "access point asks for a password and one-time code; answers are read from the "
            "terminal and never stored (docs/scaler.md).")

    def add_arguments(self, parser):
        parser.add_argument("pool", metavar="POOL")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--status", action="store_true",
                           help="say whether the session is open; exit 1 when a login is needed")
        group.add_argument("--logout", action="store_true", help="close the session")

    def handle(self, *args, pool, status, logout, **options):
        found = WorkerPool.objects.filter(name=pool).first()
        if found is None:
            known = ", ".join(WorkerPool.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no worker pool {pool!r} (known: {known})")
        if not pool_uses_session(pool=found):
            raise CommandError(f"pool {pool}: not a session pool (the scaler logs in with its "
                               f"key; add it to HTPORTAL_SSH_SESSION_POOLS for pool_login)")
        try:
            if status:
                needed = pool_login_status(found)
                if needed:
                    raise CommandError(needed)
                self.stdout.write(session_describe(pool=found))
                return
            if logout:
                self.stdout.write(pool_logout(pool=found))
                return
            if pool_login_status(found) is not None:
                self.stdout.write(f"pool {pool}: logging in to {found.address}; answer the "
                                  f"host's prompts (nothing is echoed or stored)")
            self.stdout.write(pool_login(pool=found, answer=terminal_answer))
        except ScalerError as exc:
            raise CommandError(str(exc)) from None
