"""What the results pages read: a campaign's results as rows of values in chemists' units,
their histograms and outliers, and one record with its provenance, ledger row and kept files.

Bounds (a dataset may hold millions of records):
- A page in id order is one keyset query through the store (`id > after`, LIMIT page + 1),
  on the SQL and the MongoDB store alike.
- Histograms, outliers and sorted views read a SAMPLE: the first `SAMPLE_LIMIT` records (id
  order) that hold the result and match the query, one bounded query. A sorted view sorts
  that sample (in Python, so both stores behave the same) and pages over it; the page says so.
- On the SQL store only the result's own JSON (`results -> output_key -> arg_set`) and the
  element list are read (Django's KeyTransform), not the records' other results; the MongoDB
  store reads the selected documents through `store.select`.

Values are stored in atomic units (docs/runtime.md); they are shown as:
energy per atom (eV), max |F| (eV/Å, F = -gradient), dipole magnitude (D) and HOMO–LUMO gap
(eV), plus every other scalar value a parser gave, under its own name and unit.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from django.db.models.fields.json import KeyTransform

from campaigns.errors import QueryError
from campaigns.models import ArgSet, Campaign, Dataset, Record, Task
from campaigns.query import compile_query
from campaigns.selectors import campaign_arg_sets
from campaigns.services.export_frames import BOHR_ANGSTROM, HARTREE_EV, is_number
from campaigns.services.kept_files import kept_file_find
from campaigns.services.ownership import campaigns_visible
from campaigns.stores import store_for
from workers.runtime.keepfiles import kept_name

PAGE_SIZE = 50
# Results read for histograms, outliers and sorted views: decoding a result's JSON (gradient
# included) is the page's cost, about 0.1 ms each on SQLite (bench over 50,000 results).
SAMPLE_LIMIT = 2_000
HISTOGRAM_BINS = 30
DEFAULT_SIGMA = 4.0
UNPHYSICAL_FORCE = 10.0  # eV/Å: no bound molecule near equilibrium has a force this large
QUERY_MAX_CHARS = 4000
OUTLIERS_SHOWN = 50
EXTRA_COLUMNS = 8
DEBYE_PER_E_BOHR = 2.541746473  # 1 e·bohr in debye
FORCE_FACTOR = HARTREE_EV / BOHR_ANGSTROM  # Eh/bohr -> eV/Å


# -- values -------------------------------------------------------------------------------

def _scalar(values: dict, name: str, unit: str) -> Optional[float]:
    item = values.get(name)
    if isinstance(item, dict) and item.get("unit") == unit and is_number(item.get("value")):
        return float(item["value"])
    return None


def energy_per_atom(values: dict, atoms: int) -> Optional[float]:
    energy = _scalar(values, "energy", "Eh")
    return energy * HARTREE_EV / atoms if energy is not None and atoms else None


def max_force(values: dict, atoms: int) -> Optional[float]:
    item = values.get("gradient")
    if not isinstance(item, dict) or item.get("unit") != "Eh/bohr":
        return None
    rows = item.get("value")
    if not isinstance(rows, list) or not rows or (atoms and len(rows) != atoms):
        return None
    largest = 0.0
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and all(map(is_number, row))):
            return None
        largest = max(largest, math.sqrt(sum(g * g for g in row)))
    return largest * FORCE_FACTOR


def dipole_debye(values: dict, atoms: int) -> Optional[float]:
    size = _scalar(values, "dipole_magnitude", "e·bohr")
    if size is None:
        item = values.get("dipole")
        vector = item.get("value") if isinstance(item, dict) and item.get(
            "unit") == "e·bohr" else None
        if isinstance(vector, list) and len(vector) == 3 and all(map(is_number, vector)):
            size = math.sqrt(sum(x * x for x in vector))
    return size * DEBYE_PER_E_BOHR if size is not None else None


def gap_ev(values: dict, atoms: int) -> Optional[float]:
    gap = _scalar(values, "homo_lumo_gap_ev", "eV")
    if gap is not None:
        return gap
    gap = _scalar(values, "homo_lumo_gap", "Eh")
    return gap * HARTREE_EV if gap is not None else None


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    unit: str
    value: Callable[[dict, int], Optional[float]]

    @property
    def title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


COLUMNS = (
    Column("energy_per_atom", "energy per atom", "eV", energy_per_atom),
    Column("max_force", "max |F|", "eV/Å", max_force),
    Column("dipole", "dipole magnitude", "D", dipole_debye),
    Column("gap", "HOMO–LUMO gap", "eV", gap_ev),
)
# Stored values the columns above already show (or that are not one number).
SHOWN = frozenset({"energy", "gradient", "dipole", "dipole_magnitude", "homo_lumo_gap",
                   "homo_lumo_gap_ev", "computed"})
SORTS = ("id", *(column.key for column in COLUMNS))


def _extra_column(name: str, unit: str) -> Column:
    return Column(f"x:{name}", name, unit, lambda values, atoms: _scalar(values, name, unit))


def extra_names(values: dict) -> Iterable[tuple[str, str]]:
    """(name, unit) of each other scalar value a parser gave."""
    for name, item in values.items():
        if name in SHOWN or not isinstance(item, dict) or not is_number(item.get("value")):
            continue
        yield name, str(item.get("unit") or "")


# -- the rows -----------------------------------------------------------------------------

@dataclass
class Row:
    record_id: str
    values: dict[str, Optional[float]]  # column key -> value in the column's unit
    flags: list[str] = field(default_factory=list)

    def cells(self, columns: list[Column]) -> list[Optional[float]]:
        return [self.values.get(column.key) for column in columns]


@dataclass
class Loaded:
    record_id: str
    values: dict
    atoms: int


def parse_query(text: str) -> dict:
    """The query box's text as a query (empty: every record); QueryError says what is wrong."""
    text = (text or "").strip()
    if not text:
        return {}
    if len(text) > QUERY_MAX_CHARS:
        raise QueryError(f"the query is {len(text):,} characters long; at most "
                         f"{QUERY_MAX_CHARS:,} are allowed")
    try:
        query = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError(f"the query is not JSON: {exc.msg} at line {exc.lineno} column "
                         f"{exc.colno} (write a JSON object, e.g. "
                         '{"input.charge": 0})') from None
    compile_query(query)  # QueryError names the unsupported part
    return query


def _selection(campaign: Campaign, arg_set: str, query: dict, after: Optional[str]) -> dict:
    parts = [{f"{campaign.output_key}.{arg_set}": {"$ne": None}}]
    if query:
        parts.append(query)
    if after is not None:
        parts.append({"id": {"$gt": after}})
    return {"$and": parts}


def _load(*, campaign: Campaign, arg_set: str, query: dict, after: Optional[str],
          limit: int) -> list[Loaded]:
    """Up to `limit` records (id order, after `after`) holding the result: its values and the
    molecule's atom count."""
    selection = _selection(campaign, arg_set, query, after)
    dataset = campaign.dataset
    if dataset.store == Dataset.Store.SQL:
        rows = (Record.objects.filter(dataset=dataset).filter(compile_query(selection))
                .order_by("record_id")
                .values_list("record_id",
                             KeyTransform(arg_set, KeyTransform(campaign.output_key, "results")),
                             KeyTransform("elements", "input"))[:limit])
        return [_loaded(record_id, values, elements) for record_id, values, elements in rows]
    records = store_for(dataset).select(query=selection, limit=limit)
    return [_loaded(record["id"], ((record.get("results") or {}).get(campaign.output_key) or {})
                    .get(arg_set), (record.get("input") or {}).get("elements"))
            for record in records]


def _loaded(record_id: str, values: Any, elements: Any) -> Loaded:
    values = values if isinstance(values, dict) else {}
    computed = values.get("computed") if isinstance(values.get("computed"), dict) else {}
    atoms = computed.get("elements") if isinstance(computed.get("elements"), list) else elements
    return Loaded(str(record_id), values, len(atoms) if isinstance(atoms, list) else 0)


def _row(loaded: Loaded, columns: list[Column]) -> Row:
    return Row(loaded.record_id, {column.key: column.value(loaded.values, loaded.atoms)
                                  for column in columns})


# -- statistics ---------------------------------------------------------------------------

@dataclass
class Histogram:
    key: str
    title: str
    count: int
    mean: Optional[float]
    std: Optional[float]
    edges: list[float]  # bins + 1 edges
    counts: list[int]

    def as_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "count": self.count, "mean": self.mean,
                "std": self.std, "edges": self.edges, "counts": self.counts}


def histogram(values: list[float], *, key: str = "", title: str = "",
              bins: int = HISTOGRAM_BINS) -> Histogram:
    """Equal-width bins from the smallest to the largest value (the largest in the last bin)."""
    if not values:
        return Histogram(key, title, 0, None, None, [], [])
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    low, high = min(values), max(values)
    if high == low:
        return Histogram(key, title, len(values), mean, std, [low, high], [len(values)])
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / width), bins - 1)] += 1
    return Histogram(key, title, len(values), mean, std,
                     [low + width * n for n in range(bins)] + [high], counts)


def flag(row: Row, stats: dict[str, Histogram], columns: list[Column], sigma: float) -> None:
    """Mark a value beyond `sigma` standard deviations of the sample's mean, and an
    unphysical force."""
    row.flags = []
    for column in columns:
        value, stat = row.values.get(column.key), stats.get(column.key)
        if value is None or stat is None or not stat.std:
            continue
        if abs(value - stat.mean) > sigma * stat.std:
            row.flags.append(f"{column.title} {value:.4g} is {abs(value - stat.mean) / stat.std:.1f} σ "
                             f"from the mean {stat.mean:.4g}")
    force = row.values.get("max_force")
    if force is not None and force > UNPHYSICAL_FORCE:
        row.flags.append(f"unphysical force: max |F| {force:.3g} eV/Å > {UNPHYSICAL_FORCE:g}")


# -- the results page ---------------------------------------------------------------------

@dataclass
class ResultsView:
    campaign: Campaign
    arg_sets: list[str]
    arg_set: str
    columns: list[Column]
    rows: list[Row]
    sort: str
    descending: bool
    query_text: str
    error: str = ""
    sigma: float = DEFAULT_SIGMA
    sample_size: int = 0
    sample_limit: int = SAMPLE_LIMIT
    sample_full: bool = False  # the sample stopped at its limit: there are more records
    histograms: list[Histogram] = field(default_factory=list)
    outliers: list[Row] = field(default_factory=list)
    outliers_count: int = 0
    next_after: Optional[str] = None  # id order: the next page starts after this id
    after: Optional[str] = None
    page: int = 1  # sorted views: the page within the sorted sample
    pages: int = 1


def results_view(*, campaign: Campaign, arg_set: Optional[str] = None, query_text: str = "",
                 sort: str = "id", after: Optional[str] = None, page: int = 1,
                 sigma: float = DEFAULT_SIGMA, page_size: int = PAGE_SIZE,
                 sample_limit: int = SAMPLE_LIMIT) -> ResultsView:
    names = list(campaign_arg_sets(campaign=campaign).values_list("name", flat=True))
    arg_set = arg_set if arg_set in names else (names[0] if names else "")
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    if key not in SORTS:
        key, descending = "id", False
    view = ResultsView(campaign=campaign, arg_sets=names, arg_set=arg_set,
                       columns=list(COLUMNS), rows=[], sort=key, descending=descending,
                       query_text=query_text, sigma=sigma, after=after,
                       sample_limit=sample_limit)
    if not arg_set:
        view.error = f"campaign {campaign.name} has no arg sets, so it has no results"
        return view
    try:
        query = parse_query(query_text)
    except QueryError as exc:
        view.error = f"query: {exc}"
        return view
    sample = _load(campaign=campaign, arg_set=arg_set, query=query, after=None,
                   limit=sample_limit)
    view.sample_size, view.sample_full = len(sample), len(sample) >= sample_limit
    view.columns = _columns(sample)
    sample_rows = [_row(loaded, view.columns) for loaded in sample]
    stats = {}
    for column in view.columns:
        values = [row.values[column.key] for row in sample_rows
                  if row.values.get(column.key) is not None]
        stats[column.key] = histogram(values, key=column.key, title=column.title)
    view.histograms = [stats[column.key] for column in view.columns if stats[column.key].count]
    for row in sample_rows:
        flag(row, stats, view.columns, sigma)
    flagged = [row for row in sample_rows if row.flags]
    view.outliers_count, view.outliers = len(flagged), flagged[:OUTLIERS_SHOWN]
    if key == "id" and not descending:
        loaded = _load(campaign=campaign, arg_set=arg_set, query=query, after=after,
                       limit=page_size + 1)
        view.rows = [_row(item, view.columns) for item in loaded[:page_size]]
        for row in view.rows:
            flag(row, stats, view.columns, sigma)
        if len(loaded) > page_size:
            view.next_after = view.rows[-1].record_id
        return view
    ordered = _sorted(sample_rows, key, descending)
    view.pages = max(1, math.ceil(len(ordered) / page_size))
    view.page = min(max(1, page), view.pages)
    view.rows = ordered[(view.page - 1) * page_size:view.page * page_size]
    return view


def _sorted(rows: list[Row], key: str, descending: bool) -> list[Row]:
    """Rows by `key`; records lacking the value come last either way."""
    if key == "id":
        return sorted(rows, key=lambda row: row.record_id, reverse=descending)
    present = [row for row in rows if row.values.get(key) is not None]
    missing = [row for row in rows if row.values.get(key) is None]
    present.sort(key=lambda row: (row.values[key], row.record_id), reverse=descending)
    return present + missing


def _columns(sample: list[Loaded]) -> list[Column]:
    """The fixed columns, then the most frequent other scalar values of the sample."""
    seen: dict[tuple[str, str], int] = {}
    for loaded in sample:
        for name_unit in extra_names(loaded.values):
            seen[name_unit] = seen.get(name_unit, 0) + 1
    extras = sorted(seen, key=lambda name_unit: (-seen[name_unit], name_unit))[:EXTRA_COLUMNS]
    return [*COLUMNS, *(_extra_column(name, unit) for name, unit in sorted(extras))]


# -- one record ---------------------------------------------------------------------------

@dataclass
class KeptFile:
    name: str
    arg_set: str
    source: str
    size: Optional[int]


@dataclass
class ResultPart:
    arg_set: str
    computed: dict
    values: list[tuple[str, str, str]]  # name, value as text, unit
    row: Row
    host: str  # the computed block's host, else the ledger's


@dataclass
class RecordView:
    campaign: Campaign
    record_id: str
    input: dict
    elements: list
    coordinates: list
    xyz: str
    results: list[ResultPart]
    task: Optional[Task]
    files: list[KeptFile]
    other_fields: dict


def campaign_by_name(*, user, name: str) -> Optional[Campaign]:
    return campaigns_visible(user=user).filter(name=name).first()


def record_view(*, campaign: Campaign, record_id: str) -> Optional[RecordView]:
    """One record of the campaign's dataset, with the campaign's results; None if missing."""
    records = store_for(campaign.dataset).select(query={"id": record_id}, limit=1)
    if not records:
        return None
    record = records[0]
    data = record.get("input") if isinstance(record.get("input"), dict) else {}
    elements = data.get("elements") if isinstance(data.get("elements"), list) else []
    coordinates = data.get("coordinates") if isinstance(data.get("coordinates"), list) else []
    output = (record.get("results") or {}).get(campaign.output_key)
    output = output if isinstance(output, dict) else {}
    arg_sets = list(campaign_arg_sets(campaign=campaign))
    parts = []
    for arg_set in arg_sets:
        values = output.get(arg_set.name)
        if not isinstance(values, dict):
            continue
        loaded = _loaded(record_id, values, elements)
        parts.append(ResultPart(
            arg_set=arg_set.name,
            computed=values.get("computed") if isinstance(values.get("computed"), dict) else {},
            values=[(name, _text(item.get("value")), str(item.get("unit") or ""))
                    for name, item in values.items()
                    if name != "computed" and isinstance(item, dict) and "value" in item],
            row=_row(loaded, list(COLUMNS)), host=""))
    task = campaign.tasks.filter(record_id=record_id).first()
    for part in parts:
        part.host = str(part.computed.get("host") or (task.host or task.worker if task else ""))
    return RecordView(
        campaign=campaign, record_id=record_id, input=data, elements=elements,
        coordinates=coordinates, xyz=xyz_text(record_id, elements, coordinates),
        results=parts, task=task, files=kept_files(campaign=campaign, record_id=record_id,
                                                   arg_sets=arg_sets),
        other_fields={k: v for k, v in data.items() if k not in ("elements", "coordinates")})


def _text(value: Any, limit: int = 400) -> str:
    if is_number(value):
        return f"{value:.10g}"
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + " …"


def xyz_text(record_id: str, elements: list, coordinates: list) -> str:
    """The molecule as XYZ for the 3D view; empty if the input is not a geometry."""
    if not elements or len(elements) != len(coordinates):
        return ""
    lines = [str(len(elements)), record_id.replace("\n", " ")[:80]]
    for element, row in zip(elements, coordinates):
        if not (isinstance(element, str) and element.isalpha() and isinstance(row, list)
                and len(row) == 3 and all(map(is_number, row))):
            return ""
        lines.append(f"{element} {row[0]:.6f} {row[1]:.6f} {row[2]:.6f}")
    return "\n".join(lines) + "\n"


def kept_files(*, campaign: Campaign, record_id: str, arg_sets: list[ArgSet]) -> list[KeptFile]:
    """The record's kept files that are in storage: one per keep_files entry of each arg set
    (the names the worker gave them, docs/runtime.md)."""
    from django.core.files.storage import default_storage
    found = []
    for arg_set in arg_sets:
        for source, pattern in (arg_set.keep_files or {}).items():
            try:
                name = kept_name(str(pattern), record_id)
            except (KeyError, ValueError, IndexError):
                continue
            path = kept_file_find(campaign=campaign.name, record_id=record_id, name=name)
            if path is not None:
                try:
                    size = default_storage.size(path)
                except OSError:
                    size = None
                found.append(KeptFile(name, arg_set.name, str(source), size))
    return found


def kept_file_allowed(*, campaign: Campaign, record_id: str, name: str) -> bool:
    """Whether `name` is one of the files the campaign's arg sets keep for this record."""
    for arg_set in campaign_arg_sets(campaign=campaign):
        for pattern in (arg_set.keep_files or {}).values():
            try:
                if kept_name(str(pattern), record_id) == name:
                    return True
            except (KeyError, ValueError, IndexError):
                continue
    return False
