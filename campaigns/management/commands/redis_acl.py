"""Print or apply the Redis ACL rules of the worker user and the portal user."""
from __future__ import annotations

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from campaigns.redis_acl import (AclError, acl_apply, acl_whoami, default_user_open,
                                 portal_rule, worker_login_problem, worker_redis_credentials,
                                 worker_redis_url, worker_rule)
from htportal.redis_credentials import redis_url_credentials, redis_url_shown


class Command(BaseCommand):
    help = ("Print the Redis ACL rules of the worker user (the one in the URL workers get: "
            "takes jobs and pushes results, nothing else) and of the portal's own user (no "
            "FLUSHALL, CONFIG or other @dangerous command); --apply sends them with ACL SETUSER over "
            "HTPORTAL_REDIS_ADMIN_URL. Passwords appear only as SHA-256 hashes.")

    def add_arguments(self, parser):
        parser.add_argument("--aclfile", action="store_true",
                            help="print `user ...` lines for a Redis ACL file instead")
        parser.add_argument("--apply", action="store_true",
                            help="send the worker user's rules to Redis (ACL SETUSER)")
        parser.add_argument("--portal", action="store_true",
                            help="with --apply: restrict the portal's own user too (the admin "
                                 "URL must log in as another user, which keeps ACL rights)")
        parser.add_argument("--save", action="store_true",
                            help="with --apply: ACL SAVE, so a restart keeps the rules (Redis "
                                 "must run with an aclfile)")

    def handle(self, *args, aclfile, apply, portal, save, **options):
        if (portal or save) and not apply:
            raise CommandError("--portal and --save go with --apply")
        worker_user, worker_password = worker_redis_credentials()
        worker = self._rule(worker_rule, user=worker_user, password=worker_password or "")
        portal_user, portal_password = redis_url_credentials(settings.REDIS_URL)
        try:
            portal_rules = [portal_rule(user=portal_user, password=portal_password)]
            portal_note = ""
        except AclError as exc:
            portal_rules, portal_note = [], str(exc)
        if apply:
            if portal and not portal_rules:
                raise CommandError(f"--portal: {portal_note}")
            self._apply(worker, portal_rules if portal else [], save=save)
            if not portal:
                self.stdout.write(f"portal user {portal_user}: left as it is (--portal "
                                  f"restricts it)")
            return
        self.stdout.write(f"# worker user {worker.user}: what the scaler hands workers "
                          f"(HTPORTAL_WORKER_REDIS_URL)")
        for rule in [worker, *portal_rules]:
            if rule is not worker:
                self.stdout.write(f"# portal user {rule.user}: the portal's REDIS_URL")
            self.stdout.write(rule.aclfile_line() if aclfile else rule.command())
        if portal_note:
            self.stdout.write(f"# portal user {portal_user}: no rule: {portal_note}")

    def _rule(self, make, **kwargs):
        try:
            return make(**kwargs)
        except AclError as exc:
            raise CommandError(str(exc)) from None

    def _apply(self, worker, portal_rules, *, save: bool) -> None:
        admin_url = settings.REDIS_ADMIN_URL
        where = redis_url_shown(admin_url)
        connection = redis.Redis.from_url(admin_url, socket_connect_timeout=10, socket_timeout=30)
        try:
            if portal_rules and acl_whoami(connection=connection) == portal_rules[0].user:
                raise CommandError(
                    f"--portal: {where} logs in as the portal's user {portal_rules[0].user!r}, "
                    f"which these rules take ACL rights from: set HTPORTAL_REDIS_ADMIN_URL to "
                    f"another user's URL")
            for line in acl_apply(connection=connection, rules=[worker, *portal_rules]):
                self.stdout.write(line)
            if save:
                connection.execute_command("ACL", "SAVE")
                self.stdout.write("ACL SAVE: written to the server's aclfile")
            if default_user_open(connection=connection):
                self.stderr.write(
                    "warning: Redis's default user is on with no password: any client, a worker "
                    "included, can skip the worker user and have every right. Give it a "
                    "password (requirepass, or ACL SETUSER default resetpass >PASSWORD) and "
                    "put it in REDIS_URL (docs/security-redis.md)")
        except redis.exceptions.ResponseError as exc:
            raise CommandError(f"Redis at {where} refused: {exc} (the admin URL needs a user "
                               f"allowed to run ACL: HTPORTAL_REDIS_ADMIN_URL)") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise CommandError(f"Redis at {where} unreachable: {exc}") from None
        finally:
            connection.close()
        url = worker_redis_url()
        problem = worker_login_problem(url=url)
        self.stdout.write(f"user {worker.user}: " + (f"cannot log in at {redis_url_shown(url)}: "
                                                     f"{problem}" if problem else
                                                     f"logs in at {redis_url_shown(url)}"))
