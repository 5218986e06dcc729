"""Export a campaign's results as a training set: `manage.py export_results NAME`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from campaigns.errors import ApplicationError
from campaigns.services.export_frames import DEFAULT_UNITS
from campaigns.services.export_hdf5 import LAYOUTS
from campaigns.services.exports import FORMATS, UNITS, results_export
from campaigns.services.submission import campaign_find


class Command(BaseCommand):
    help = ("Write the records of a campaign's dataset that hold its result (energy, forces = "
            "-gradient, charges, the stored values) as JSON Lines, extended XYZ, QCSchema "
            "AtomicResult JSON Lines or HDF5 (AIMNet2/TorchANI layout); records without it are "
            "left out and counted on stderr.")

    def add_arguments(self, parser):
        parser.add_argument("campaign")
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--arg-set", help="whose values (default: the first arg set)")
        parser.add_argument("--units", choices=list(UNITS), default=DEFAULT_UNITS,
                            help="ev: eV and eV/Å (default, what ase and MACE read); "
                                 "au: Eh and Eh/bohr. QCSchema is always atomic units")
        parser.add_argument("--key-prefix", choices=["", "REF_"], default="",
                            help="extxyz: REF_ writes REF_energy, REF_forces, REF_charges "
                                 "(for MACE's --energy_key REF_energy)")
        parser.add_argument("--charges", dest="charges_key", metavar="KEY",
                            help="which stored per-atom charges to export (default: the first "
                                 "of charges, mbis_charges, hirshfeld_charges, loewdin_charges, "
                                 "mulliken_charges)")
        parser.add_argument("--hdf5-layout", choices=LAYOUTS, default="aimnet2")
        parser.add_argument("--output", type=Path,
                            help="the file to write (default: stdout; required for hdf5)")

    def handle(self, *args, campaign, format, arg_set, units, key_prefix, charges_key,
               hdf5_layout, output, **options):
        if format == "hdf5" and output is None:
            raise CommandError("--format hdf5 writes a file: give --output FILE.h5")
        try:
            export = results_export(campaign=campaign_find(name=campaign), format=format,
                                    arg_set=arg_set, units=units, key_prefix=key_prefix,
                                    charges_key=charges_key)
            if format == "hdf5":
                export.write_hdf5(path=str(output), layout=hdf5_layout)
            elif output is None:
                self._to_stdout(export)
            else:
                with open(output, "w", encoding="utf-8") as handle:
                    handle.writelines(export.chunks())
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"{output}: cannot write: {exc}") from None
        self.stderr.write(export.summary())

    def _to_stdout(self, export) -> None:
        try:
            for chunk in export.chunks():
                self.stdout.write(chunk, ending="")
            self.stdout.flush()
        except BrokenPipeError:
            # `export_results ... | head`: the reader has all it wanted. Point stdout at
            # /dev/null so that Python's own flush at exit does not complain, and stop quietly.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
