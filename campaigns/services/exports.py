"""Exporting a campaign's results as a training set: JSON Lines, extended XYZ, QCSchema
AtomicResult JSON Lines (streamed), or HDF5 in the AIMNet2/TorchANI layout (written to a file).

The records exported are those of the campaign's dataset that hold the result
record[output_key][arg_set] (written by this campaign, or an earlier one with the same output
key and arg set name); the others are left out and counted. Records come in the store's id
order, a batch at a time, so memory stays at one batch whatever the export's size, and a page
(`after`, `limit`) is a keyset cursor: the next page starts after the last id of this one.

Units: results are stored in atomic units (docs/pipeline.md). `ev` (the default, what ase, MACE
and every extxyz reader expect) converts energy to eV and forces to eV/Å (written "eV/Ang");
`au` writes Eh and Eh/bohr. Forces are -gradient. Coordinates are always Å. QCSchema is always
in its own atomic units. Charge, multiplicity and geometry come from what the worker says it
computed (campaigns.services.export_frames).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from campaigns.errors import ApplicationError
from campaigns.models import Campaign
from campaigns.selectors import campaign_arg_sets
from campaigns.services.export_frames import (BOHR_ANGSTROM, COORDINATES_UNIT,  # noqa: F401
                                              DEFAULT_UNITS, HARTREE_EV, UNITS, Units, frame_of)
from campaigns.services.export_hdf5 import LAYOUTS, Hdf5Report, hdf5_write
from campaigns.services.export_writers import KEY_PREFIXES, WRITERS, FrameRefused
from campaigns.stores import store_for

log = logging.getLogger(__name__)

TEXT_FORMATS = ("jsonl", "extxyz", "qcschema")
FORMATS = (*TEXT_FORMATS, "hdf5")
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "extxyz": "chemical/x-extxyz",
                 "qcschema": "application/x-ndjson", "hdf5": "application/x-hdf5"}
SUFFIXES = {"jsonl": "jsonl", "extxyz": "extxyz", "qcschema": "qcschema.jsonl", "hdf5": "h5"}
BATCH_SIZE = 500


@dataclass
class ResultsExport:
    """One export (or one page of it): what it covers, known before the first line is made."""

    campaign: Campaign
    arg_set: str
    format: str
    units: Units
    after: Optional[str]  # the export starts after this record id (None: at the first)
    last: Optional[str]  # ... and ends at this one (None: at the last record)
    without_result: int  # records of the dataset in that range lacking the result
    key_prefix: str = ""
    charges_key: Optional[str] = None
    model: Optional[dict] = None  # QCSchema's model when the result does not name one
    written: int = 0  # records written so far
    refused: int = 0  # frames the format's own model refused (QCSchema), or HDF5 left out

    @property
    def result_path(self) -> str:
        return f"{self.campaign.output_key}.{self.arg_set}"

    @property
    def next_after(self) -> Optional[str]:
        """Where the next page starts; None when this one runs to the end."""
        return self.last

    def frames(self):
        """The export's frames, fetched from the store a batch at a time."""
        store = store_for(self.campaign.dataset)
        cursor = self.after
        while True:
            batch = store.select(query=_id_range(self.result_path, {"$ne": None}, cursor,
                                                 self.last), limit=BATCH_SIZE)
            for record in batch:
                yield frame_of(record, _values(record, self.campaign.output_key, self.arg_set),
                               self.units, charges_key=self.charges_key)
            if len(batch) < BATCH_SIZE:
                return
            cursor = batch[-1]["id"]

    def chunks(self) -> Iterator[str]:
        """The export's text, one record (line or frame) at a time."""
        if self.format not in TEXT_FORMATS:
            raise ApplicationError(f"{self.format} is written to a file, not streamed as text")
        write = WRITERS[self.format](units=self.units, key_prefix=self.key_prefix,
                                     model=self.model)
        for frame in self.frames():
            try:
                text = write(frame)
            except (FrameRefused, ValueError, TypeError, KeyError) as exc:  # a malformed record
                self.refused += 1
                log.warning("export %s: left out: %s", self.result_path, exc)
                continue
            self.written += 1
            yield text

    def write_hdf5(self, *, path: str, layout: str = "aimnet2") -> Hdf5Report:
        """Write the export to the HDF5 file `path` (created or replaced)."""
        if layout not in LAYOUTS:
            raise ApplicationError(f"unknown HDF5 layout {layout!r} (known: {', '.join(LAYOUTS)})")
        report = hdf5_write(path=path, frames=self.frames(), units=self.units, layout=layout)
        self.written, self.refused = report.written, report.left_out
        return report

    def summary(self) -> str:
        """`wrote 120 records (xtb.gfn2, units ev); 3 records ... have no result (left out)`"""
        refused = (f"; {self.refused:,} left out as the format refused them (see the log)"
                   if self.refused else "")
        return (f"wrote {self.written:,} records ({self.result_path}, units {self.units.name}); "
                f"{self.without_result:,} records of dataset {self.campaign.dataset.name} have no "
                f"result {self.result_path} (left out){refused}")


def results_export(*, campaign: Campaign, format: str, arg_set: Optional[str] = None,
                   units: str = DEFAULT_UNITS, after: Optional[str] = None,
                   limit: Optional[int] = None, key_prefix: str = "",
                   charges_key: Optional[str] = None) -> ResultsExport:
    """The campaign's results export (a page of `limit` records after `after`, or all of them).

    arg_set: whose values (default: the campaign's first arg set). ApplicationError on an unknown
    format, unit system or arg set. Nothing is read but ids and a count until chunks() runs.
    """
    if format not in FORMATS:
        raise ApplicationError(f"unknown format {format!r} (known: {', '.join(FORMATS)})")
    if units not in UNITS:
        raise ApplicationError(f"unknown units {units!r} (known: {', '.join(UNITS)})")
    if key_prefix not in KEY_PREFIXES:
        raise ApplicationError(f"unknown key prefix {key_prefix!r} (known: '', 'REF_')")
    if limit is not None and limit < 1:
        raise ApplicationError(f"limit must be 1 or more (got {limit})")
    arg_set = _arg_set_name(campaign, arg_set)
    store = store_for(campaign.dataset)
    path = f"{campaign.output_key}.{arg_set}"
    last = None
    if limit is not None:
        # One id more than the page, to know whether a next page exists.
        ids = next(store.iter_ids(query=_id_range(path, {"$ne": None}, after, None),
                                  batch_size=limit + 1), [])
        last = ids[limit - 1] if len(ids) > limit else None
    without = store.count(query=_id_range(path, None, after, last))
    return ResultsExport(campaign=campaign, arg_set=arg_set, format=format, units=UNITS[units],
                         after=after, last=last, without_result=without, key_prefix=key_prefix,
                         charges_key=charges_key, model=_model(campaign, arg_set))


def _arg_set_name(campaign: Campaign, name: Optional[str]) -> str:
    names = list(campaign_arg_sets(campaign=campaign).values_list("name", flat=True))
    if not names:
        raise ApplicationError(f"campaign {campaign.name} has no arg sets, so no results")
    if name is None:
        return names[0]
    if name not in names:
        raise ApplicationError(f"campaign {campaign.name} has no arg set {name!r} "
                               f"(its arg sets: {', '.join(names)})")
    return name


def _id_range(path: str, condition: Any, after: Optional[str], last: Optional[str]) -> dict:
    """The query: `path` meets `condition`, for ids in (after, last]."""
    ids = {}
    if after is not None:
        ids["$gt"] = after
    if last is not None:
        ids["$lte"] = last
    return {path: condition, **({"id": ids} if ids else {})}


def _values(record: dict, output_key: str, arg_set: str) -> dict:
    value = record["results"][output_key][arg_set]
    return value if isinstance(value, dict) else {}


def _model(campaign: Campaign, arg_set: str) -> dict:
    """QCSchema's model from the arg set's parameters: xtb's method, or ORCA's route line."""
    parameters = (campaign_arg_sets(campaign=campaign).filter(name=arg_set)
                  .values_list("parameters", flat=True).first()) or {}
    if campaign.function.startswith("xtb"):
        return {"method": f"{parameters.get('method', 'gfn2')}-xtb", "basis": None}
    route = str(parameters.get("route", "")).strip().splitlines()
    return {"method": route[0].lstrip("! ").strip() if route else campaign.function,
            "basis": None}
