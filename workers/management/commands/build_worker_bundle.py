"""`manage.py build_worker_bundle OUT`: write the grid worker's zipapp, print size and sha256."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workers.bundle import BundleError, build_bundle


class Command(BaseCommand):
    help = "Build the worker bundle (one zipapp: python3 OUT --redis-url URL QUEUE)."

    def add_arguments(self, parser):
        parser.add_argument("out", type=Path,
                            help="where to write the bundle, e.g. htportal-worker.pyz")

    def handle(self, *args, out: Path, **options):
        try:
            info = build_bundle(out)
        except BundleError as exc:
            raise CommandError(str(exc)) from None
        packages = ", ".join(f"{name} {version}" for name, version in info.packages.items())
        self.stdout.write(f"{info.path}: {info.size:,} bytes ({info.size / 1e6:.2f} MB)")
        self.stdout.write(f"sha256 {info.sha256}")
        self.stdout.write(f"packages: {packages}")
