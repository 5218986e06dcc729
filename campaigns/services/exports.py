"""Exporting a campaign's results as a training set: JSON Lines or extended XYZ, streamed.

The records exported are those of the campaign's dataset that hold the result
record[output_key][arg_set] (written by this campaign, or an earlier one with the same output
key and arg set name); the others are left out and counted. Records come in the store's id
order, a batch at a time, so memory stays at one batch whatever the export's size, and a page
(`after`, `limit`) is a keyset cursor: the next page starts after the last id of this one.

Units: results are stored in atomic units (docs/pipeline.md). `au` writes energy in Eh and
forces in Eh/bohr; `ev` converts to eV and eV/Å (written "eV/Ang"). Forces are -gradient.
Coordinates are always Å, as records store them.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from campaigns.errors import ApplicationError
from campaigns.models import Campaign
from campaigns.selectors import campaign_arg_sets
from campaigns.stores import store_for

log = logging.getLogger(__name__)

HARTREE_EV = 27.211386245988  # eV per Eh (CODATA 2018)
BOHR_ANGSTROM = 0.529177210903  # Å per bohr (CODATA 2018)
STORED_ENERGY_UNIT = "Eh"
STORED_GRADIENT_UNIT = "Eh/bohr"
COORDINATES_UNIT = "Ang"
FORMATS = ("jsonl", "extxyz")
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "extxyz": "chemical/x-extxyz"}
BATCH_SIZE = 500
INPUT_KEYS = ("elements", "coordinates", "charge", "multiplicity")


@dataclass(frozen=True)
class Units:
    name: str
    energy: str
    forces: str
    energy_factor: float  # from Eh
    forces_factor: float  # from Eh/bohr


UNITS = {
    "au": Units("au", "Eh", "Eh/bohr", 1.0, 1.0),
    "ev": Units("ev", "eV", "eV/Ang", HARTREE_EV, HARTREE_EV / BOHR_ANGSTROM),
}


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
    written: int = 0  # records written so far by chunks()

    @property
    def result_path(self) -> str:
        return f"{self.campaign.output_key}.{self.arg_set}"

    @property
    def next_after(self) -> Optional[str]:
        """Where the next page starts; None when this one runs to the end."""
        return self.last

    def chunks(self) -> Iterator[str]:
        """The export's text, one record (line or frame) at a time, fetched a batch at a time."""
        store = store_for(self.campaign.dataset)
        render = _jsonl_line if self.format == "jsonl" else _extxyz_frame
        cursor = self.after
        while True:
            batch = store.select(query=_id_range(self.result_path, {"$ne": None}, cursor,
                                                 self.last), limit=BATCH_SIZE)
            for record in batch:
                yield render(record, _values(record, self.campaign.output_key, self.arg_set),
                             self.units)
                self.written += 1
            if len(batch) < BATCH_SIZE:
                return
            cursor = batch[-1]["id"]

    def summary(self) -> str:
        """`wrote 120 records (xtb.gfn2, eV); 3 records have no result xtb.gfn2 (left out)`"""
        return (f"wrote {self.written:,} records ({self.result_path}, units {self.units.name}); "
                f"{self.without_result:,} records of dataset {self.campaign.dataset.name} have no "
                f"result {self.result_path} (left out)")


def results_export(*, campaign: Campaign, format: str, arg_set: Optional[str] = None,
                   units: str = "au", after: Optional[str] = None,
                   limit: Optional[int] = None) -> ResultsExport:
    """The campaign's results export (a page of `limit` records after `after`, or all of them).

    arg_set: whose values (default: the campaign's first arg set). ApplicationError on an unknown
    format, unit system or arg set. Nothing is read but ids and a count until chunks() runs.
    """
    if format not in FORMATS:
        raise ApplicationError(f"unknown format {format!r} (known: {', '.join(FORMATS)})")
    if units not in UNITS:
        raise ApplicationError(f"unknown units {units!r} (known: {', '.join(UNITS)})")
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
                         after=after, last=last, without_result=without)


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


def _energy(values: dict, units: Units, record_id: str) -> Optional[float]:
    energy = _named(values, "energy", STORED_ENERGY_UNIT, record_id)
    if energy is None or not _is_number(energy):
        return None
    return energy * units.energy_factor


def _forces(values: dict, units: Units, atoms: int, record_id: str) -> Optional[list]:
    gradient = _named(values, "gradient", STORED_GRADIENT_UNIT, record_id)
    if gradient is None:
        return None
    if (not isinstance(gradient, list) or len(gradient) != atoms or not all(
            isinstance(row, list) and len(row) == 3 and all(map(_is_number, row))
            for row in gradient)):
        log.warning("record %s: gradient is not %s x 3 numbers; forces left out", record_id, atoms)
        return None
    return [[-g * units.forces_factor for g in row] for row in gradient]


def _named(values: dict, name: str, unit: str, record_id: str) -> Any:
    """The value of `name` if it is stored in `unit`; None (and a warning) otherwise."""
    item = values.get(name)
    if not isinstance(item, dict):
        return None
    if item.get("unit") != unit:
        log.warning("record %s: %s is in %r, not %s; left out", record_id, name,
                    item.get("unit"), unit)
        return None
    return item.get("value")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _jsonl_line(record: dict, values: dict, units: Units) -> str:
    data = record["input"]
    line: dict = {"id": record["id"]}
    line.update((key, data.get(key)) for key in INPUT_KEYS)
    energy = _energy(values, units, record["id"])
    forces = _forces(values, units, len(data.get("elements", [])), record["id"])
    if energy is not None:
        line["energy"] = energy
    if forces is not None:
        line["forces"] = forces
    line["units"] = {"coordinates": COORDINATES_UNIT, "energy": units.energy,
                     "forces": units.forces}
    line["results"] = values  # as stored: atomic units, each value with its unit
    extra = {key: value for key, value in data.items() if key not in INPUT_KEYS}
    if extra:
        line["extra"] = extra
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


def _extxyz_frame(record: dict, values: dict, units: Units) -> str:
    data = record["input"]
    elements, coordinates = data.get("elements", []), data.get("coordinates", [])
    energy = _energy(values, units, record["id"])
    forces = _forces(values, units, len(elements), record["id"])
    properties = "species:S:1:pos:R:3" + (":forces:R:3" if forces is not None else "")
    comment = [f"Properties={properties}"]
    if energy is not None:
        comment.append(f"energy={energy!r}")
    comment += [f"charge={data.get('charge', 0)}", f"multiplicity={data.get('multiplicity', 1)}",
                f"id={json.dumps(str(record['id']), ensure_ascii=False)}",
                f"energy_unit={units.energy}", f"forces_unit={units.forces}",
                f"coordinates_unit={COORDINATES_UNIT}", 'pbc="F F F"']
    lines = [str(len(elements)), " ".join(comment)]
    for index, (element, xyz) in enumerate(zip(elements, coordinates)):
        row = [element, *(repr(float(c)) for c in xyz)]
        if forces is not None:
            row += [repr(float(f)) for f in forces[index]]
        lines.append(" ".join(row))
    return "\n".join(lines) + "\n"
