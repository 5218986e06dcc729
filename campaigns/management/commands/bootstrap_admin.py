from django.core.management.base import BaseCommand

from campaigns.services.setup import admin_user_ensure


class Command(BaseCommand):
    help = "Create the superuser 'admin' when no superuser exists, and print its password once."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        password = admin_user_ensure(username=username)
        if password is None:
            self.stdout.write("a superuser exists already; nothing created")
        else:
            self.stdout.write(
                f"created superuser {username!r} with password {password} "
                "(shown this once: change it in the admin)"
            )
