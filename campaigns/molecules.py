"""Reading molecule files into record inputs: XYZ / extended XYZ, SDF / MOL, JSON Lines.

Every reader yields, in file order, a `Molecule` (record id or None, input dict, line) or a
`BrokenMolecule` (line, message), so the importer decides whether to skip or abort. A record's
input is `{"elements": [...], "coordinates": [[x, y, z], ...] (Å), "charge": int,
"multiplicity": int, ...extra fields}`. Without a charge the charge is 0; without a
multiplicity it is the lowest the electron count allows (1 for an even count, 2 for an odd one).

ase reads the formats (pure Python + numpy, installable everywhere, and it reads extended XYZ with
per-frame info such as charge, multiplicity, id and energies, which NNP training sets use). For
extended XYZ the hot path stays lean: ase's own frame reader costs ~90 µs a frame, so frames
whose columns are the default `species:S:1:pos:R:3` are split here, and only comment lines that
use quoting beyond `key="a b c"` go to ase's `key_val_str_to_dict`; frames with other columns
(forces, charges, ...) go through `ase.io.read` whole. tests/campaigns/
test_import_records.py checks that both paths read what `ase.io.read` reads.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
import ase.io
from ase.data import atomic_numbers
from ase.io import extxyz as ase_extxyz
from ase.io.sdf import read_sdf as ase_read_sdf

from campaigns.bounds import depth_message, max_json_depth, too_deep
from campaigns.errors import RecordImportError

DEFAULT_XYZ_PROPERTIES = "species:S:1:pos:R:3"
ID_KEYS = ("id", "name")
ID_HASH_DECIMALS = 5  # coordinates are rounded to 1e-5 Å before hashing into an id
# Unpaired electrons of an `M  RAD` value (CTfile formats, "M  RAD": 0 none, 1 singlet,
# 2 doublet, 3 triplet).
RAD_UNPAIRED = {0: 0, 1: 0, 2: 1, 3: 2}


@dataclass(frozen=True, slots=True)
class Molecule:
    record_id: str | None  # None: the importer derives one from the content (content_id)
    input: dict
    line: int


@dataclass(frozen=True, slots=True)
class BrokenMolecule:
    line: int
    message: str


class Broken(ValueError):
    """Raised inside a reader for one molecule; the reader turns it into a BrokenMolecule."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


Item = Molecule | BrokenMolecule


def content_id(molecule_input: dict) -> str:
    """A stable id from what the molecule is, not where it came from (a renamed file keeps it).

    First 16 hex digits of sha256 over elements, coordinates rounded to 1e-5 Å, charge and
    multiplicity.
    """
    parts = [f"{molecule_input['charge']} {molecule_input['multiplicity']}"]
    for element, xyz in zip(molecule_input["elements"], molecule_input["coordinates"]):
        # + 0.0 turns a rounded -0.0 into 0.0, so the sign of a zero does not change the id.
        parts.append(element + "".join(f" {round(c, ID_HASH_DECIMALS) + 0.0:.{ID_HASH_DECIMALS}f}"
                                       for c in xyz))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# --- building and checking one input -------------------------------------------------------

def _json_value(value: Any, name: str) -> Any:
    """numpy scalars and arrays to plain JSON values; NaN and infinity refused."""
    if type(value) in (str, int, bool):
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise Broken(f"{name} is {value}, not a finite number")
    if isinstance(value, list):
        return [_json_value(v, name) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v, f"{name}.{k}") for k, v in value.items()}
    return value


def _whole_number(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise Broken(f"{name} must be a whole number, got {value!r}")
    if value != int(value):
        raise Broken(f"{name} must be a whole number, got {value!r}")
    return int(value)


def build_input(elements: list[str], coordinates: list[list[float]], *, charge: Any = None,
                multiplicity: Any = None, extra: dict | None = None) -> dict:
    """The record input, checked: known elements, finite coordinates, a possible spin state.

    `elements` are symbols as ase spells them (see canonical_elements)."""
    if not elements:
        raise Broken("no atoms")
    charge = 0 if charge is None else _whole_number(charge, "charge")
    electrons = sum(map(_ATOMIC_NUMBER.__getitem__, elements)) - charge
    if electrons < 0:
        raise Broken(f"charge {charge} leaves {electrons} electrons")
    if multiplicity is None:
        multiplicity = 1 if electrons % 2 == 0 else 2
    else:
        multiplicity = _whole_number(multiplicity, "multiplicity")
        if multiplicity < 1 or (electrons + multiplicity) % 2 == 0 or multiplicity > electrons + 1:
            raise Broken(f"multiplicity {multiplicity} is impossible with {electrons} electrons "
                         f"(charge {charge})")
    if not math.isfinite(sum(map(sum, coordinates))):  # NaN and infinity survive the sum
        bad = next(c for row in coordinates for c in row if not math.isfinite(c))
        raise Broken(f"coordinate {bad} is not a finite number")
    result = {"elements": elements, "coordinates": coordinates, "charge": charge,
              "multiplicity": multiplicity}
    for key, value in (extra or {}).items():
        if key not in result:
            result[key] = _json_value(value, key)
    return result


def _split_info(info: dict) -> tuple[str | None, Any, Any, dict]:
    """(id, charge, multiplicity, the rest) from an extended-XYZ info or SDF data dict."""
    info = dict(info)
    record_id = None
    for key in ID_KEYS:
        if key in info:
            record_id = str(_json_value(info.pop(key), key))
            break
    return record_id, info.pop("charge", None), info.pop("multiplicity", None), info


_ATOMIC_NUMBER = {symbol: number for symbol, number in atomic_numbers.items() if number > 0}
# Spellings ase accepts for each element ("CL" and "cl" are chlorine), mapped to its symbol.
_ELEMENT = {spelling: symbol for symbol in _ATOMIC_NUMBER
            for spelling in (symbol, symbol.upper(), symbol.lower())}


def _element(symbol: str) -> str:
    element = _ELEMENT.get(symbol) or _ELEMENT.get(symbol.capitalize())
    if element is None:
        raise Broken(f"unknown element {symbol!r}")
    return element


def canonical_elements(symbols: list[str]) -> list[str]:
    """The symbols as ase spells them; Broken names the first unknown one."""
    elements = [_ELEMENT.get(s) for s in symbols]
    if None in elements:
        raise Broken(f"unknown element {symbols[elements.index(None)]!r}")
    return elements


# --- XYZ and extended XYZ ------------------------------------------------------------------

# key=value or key="value with spaces"; anything fancier (braces, escapes, JSON) goes to ase.
_KV = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)=(?:"([^"\\{}\[\],]*)"|([^\s"\'{}\[\]\\=,]+))')
_KV_LINE = re.compile(f"(?:{_KV.pattern})+\\s*")
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_BOOLS = {"T": True, "F": False, "true": True, "false": False, "True": True, "False": False,
          "TRUE": True, "FALSE": False}
_NEEDS_ASE_KEYS = {spelling for key in ase_extxyz.SPECIAL_3_3_KEYS | ase_extxyz.UNPROCESSED_KEYS
                   for spelling in (key, key.lower(), key.upper())}
# Properties is compared as text, as ase does; an id is the text as written, so id=007 and
# id=7 (or 1.50 and 1.5) stay two records instead of both becoming "7".
_KEPT_AS_TEXT = {"Properties", *ID_KEYS}
_VALUE_CACHE: dict[str, Any] = {}
_VALUE_CACHE_SIZE = 4096


def _fast_value(text: str) -> Any:
    """ase's conversion of one value (ints, floats, booleans, lists of them, else the text)."""
    if " " not in text:  # one value: the usual case, kept quick
        if _INT.match(text):
            return int(text)
        if _FLOAT.match(text):
            return float(text)
        return _BOOLS.get(text, text)
    parts = text.split()
    if all(_INT.match(p) for p in parts):
        values: list = [int(p) for p in parts]
    elif all(_FLOAT.match(p) for p in parts):
        values = [float(p) for p in parts]
    elif all(p in _BOOLS for p in parts):
        values = [_BOOLS[p] for p in parts]
    else:
        return text
    return values[0] if len(values) == 1 else values


def parse_comment(line: str) -> dict:
    """An extended-XYZ comment line as ase's key_val_str_to_dict reads it, as JSON values."""
    if _KV_LINE.fullmatch(line):
        info = {}
        for key, quoted, bare in _KV.findall(line):
            if key in _NEEDS_ASE_KEYS:
                break
            text = quoted or bare
            if key in _KEPT_AS_TEXT:
                info[key] = text
                continue
            value = _VALUE_CACHE.get(text, _VALUE_CACHE)
            if value is _VALUE_CACHE:  # not cached
                value = _fast_value(text)
                if len(_VALUE_CACHE) < _VALUE_CACHE_SIZE:  # "0", "1", "F F F": on most frames
                    _VALUE_CACHE[text] = tuple(value) if type(value) is list else value
            info[key] = list(value) if type(value) is tuple else value
        else:
            return info
    try:
        parsed = ase_extxyz.key_val_str_to_dict(line)
    except Exception as exc:  # ase raises ValueError, IndexError, JSONDecodeError...
        raise Broken(f"cannot read the comment line: {exc}") from None
    return {key: _json_value(value, key) for key, value in parsed.items()}


_RAW_ID = re.compile(r'(?:^|\s)(%s)=(?:"([^"]*)"|(\S+))' % "|".join(ID_KEYS))


def _raw_ids(comment: str, info: dict) -> None:
    """Put back the text of an id that ase turned into a number or a boolean."""
    for key, quoted, bare in _RAW_ID.findall(comment):
        if key in info and not isinstance(info[key], str):
            info[key] = quoted or bare


def _is_count_line(line: str) -> bool:
    return line.strip().isdigit()


def read_xyz(handle: TextIO) -> Iterator[Item]:
    """Frames of an XYZ or extended XYZ file; a broken frame is reported and passed over.

    The loop reads lines itself (no helper calls per line): it is the hot path of an import.
    """
    readline = handle.readline
    number = 0  # of the last line read
    pushed = ""  # a line read too far, which starts the next frame
    frame = 0
    while True:
        line, pushed = (pushed or readline()), ""
        if not line:
            return
        number += 1
        if not line.strip():
            continue
        frame += 1
        start = number
        if not _is_count_line(line):
            yield BrokenMolecule(start, f"frame {frame}: expected a number of atoms, "
                                        f"found {line.strip()[:40]!r}")
            while (line := readline()) and not _is_count_line(line):
                number += 1  # resynchronise on the next line that is a bare number
            pushed = line
            continue
        natoms = int(line)
        comment = readline()
        number += 1 if comment else 0
        lines, rows = [], []
        for _ in range(natoms):
            line = readline()
            fields = line.split()
            if not fields or (len(fields) == 1 and fields[0].isdigit()):  # the frame ended early
                pushed = line
                break
            lines.append(line)
            rows.append(fields)
        number += len(rows)
        if len(rows) < natoms:
            yield BrokenMolecule(start, f"frame {frame}: expected {natoms} atom lines, "
                                        f"found {len(rows)}")
        elif natoms == 0:
            yield BrokenMolecule(start, f"frame {frame}: no atoms")
        else:
            try:
                yield Molecule(*_xyz_frame(comment, lines, rows, start + 2), line=start)
            except Broken as exc:
                yield BrokenMolecule(exc.line or start, f"frame {frame}: {exc}")


def _xyz_frame(comment: str, lines: list[str], rows: list[list[str]],
               first_atom_line: int) -> tuple[str | None, dict]:
    text = comment.strip()
    if "=" in text:
        info = parse_comment(text)
        _raw_ids(text, info)  # when ase read the line
    else:
        # A plain XYZ comment is free text, often a program's banner: kept, never an id (two
        # files from the same program would otherwise collide).
        info = {"comment": text} if text else {}
    if info.pop("Properties", DEFAULT_XYZ_PROPERTIES) != DEFAULT_XYZ_PROPERTIES:
        return _xyz_frame_with_ase(comment, lines)
    info.pop("pbc", None)  # molecules: ase writes pbc="F F F" on every frame
    element_of = _ELEMENT.get
    try:
        elements = [element_of(fields[0]) for fields in rows]
        coordinates = [[float(fields[1]), float(fields[2]), float(fields[3])] for fields in rows]
        if None in elements:
            raise ValueError
    except (ValueError, IndexError):
        for offset, fields in enumerate(rows):  # the slow way, to name the line
            try:
                [float(fields[1]), float(fields[2]), float(fields[3])]
            except (ValueError, IndexError):
                raise Broken(f"atom line {lines[offset].strip()[:60]!r} is not 'element x y z'",
                             first_atom_line + offset) from None
            if element_of(fields[0]) is None:
                raise Broken(f"unknown element {fields[0]!r}", first_atom_line + offset) from None
        raise
    record_id, charge, multiplicity, extra = _split_info(info)
    return record_id, build_input(elements, coordinates, charge=charge,
                                  multiplicity=multiplicity, extra=extra)


def _xyz_frame_with_ase(comment: str, atom_lines: list[str]) -> tuple[str | None, dict]:
    """A frame with extra per-atom columns: ase reads it; the columns become input fields."""
    try:
        text = "\n".join([str(len(atom_lines)), comment.rstrip("\n"),
                          *(line.rstrip("\n") for line in atom_lines)]) + "\n"
        atoms = ase.io.read(io.StringIO(text), format="extxyz", index=0)
    except Exception as exc:
        raise Broken(f"ase cannot read the frame: {exc}") from None
    info = dict(atoms.info)
    info.pop("pbc", None)
    if atoms.calc is not None:  # ase moves energy, forces... from the frame to a calculator
        info.update(atoms.calc.results)
    for name, values in atoms.arrays.items():
        if name not in ("numbers", "positions"):
            info[name] = values
    if atoms.has("initial_charges"):
        info["initial_charges"] = atoms.get_initial_charges()
    _raw_ids(comment, info)
    record_id, charge, multiplicity, extra = _split_info(info)
    return record_id, build_input(atoms.get_chemical_symbols(), atoms.positions.tolist(),
                                  charge=charge, multiplicity=multiplicity, extra=extra)


# --- SDF and MOL ---------------------------------------------------------------------------

_SDF_CHARGE_CODES = {0: 0, 1: 3, 2: 2, 3: 1, 4: 0, 5: -1, 6: -2, 7: -3}


def read_sdf(handle: TextIO) -> Iterator[Item]:
    """Molecules of an SDF (or a single MOL) file, V2000; each block ends at `$$$$`."""
    block: list[str] = []
    start = 1
    index = 0
    for number, line in enumerate(handle, start=1):
        if line.startswith("$$$$"):
            index += 1
            yield _sdf_item(block, start, index)
            block, start = [], number + 1
        else:
            block.append(line)
    if any(line.strip() for line in block):
        index += 1
        yield _sdf_item(block, start, index)


def _sdf_item(block: list[str], start: int, index: int) -> Item:
    try:
        record_id, molecule_input = _sdf_block(block, start)
    except Broken as exc:
        return BrokenMolecule(exc.line or start, f"molecule {index}: {exc}")
    return Molecule(record_id, molecule_input, start)


def _sdf_block(block: list[str], start: int) -> tuple[str | None, dict]:
    counts_at = start + 3
    if len(block) < 4:
        raise Broken(f"expected a header of 3 lines and a counts line, found {len(block)} lines")
    counts = block[3]
    if "V3000" in counts:
        raise Broken("V3000 molfiles are not supported (V2000 only)", counts_at)
    try:
        natoms, nbonds = int(counts[0:3]), int(counts[3:6])
    except ValueError:
        raise Broken(f"counts line {counts.rstrip()!r} does not start with the number of atoms "
                     "and bonds", counts_at) from None
    atom_block = block[4:4 + natoms]
    if len(atom_block) < natoms:
        raise Broken(f"expected {natoms} atom lines, found {len(atom_block)}", counts_at)
    charges = []
    for offset, line in enumerate(atom_block):
        fields = line.split()
        try:
            if len(fields) < 4:
                raise ValueError
            [float(f) for f in fields[:3]]
            _element(fields[3])
        except ValueError:
            raise Broken(f"atom line {line.rstrip()[:60]!r} is not 'x y z element ...'",
                         counts_at + 1 + offset) from None
        except Broken as exc:
            raise Broken(str(exc), counts_at + 1 + offset) from None
        code = int(fields[5]) if len(fields) > 5 and fields[5].lstrip("-").isdigit() else 0
        charges.append(_SDF_CHARGE_CODES.get(code, 0))
    atoms = ase_read_sdf(io.StringIO("".join(block)))
    rest = block[4 + natoms + nbonds:]
    charge, multiplicity, data = _sdf_properties(rest, counts_at + 1 + natoms + nbonds)
    if charge is None:
        charge = sum(charges)
    record_id = block[0].strip() or None
    return record_id, build_input(canonical_elements(atoms.get_chemical_symbols()),
                                  atoms.positions.tolist(), charge=charge,
                                  multiplicity=multiplicity, extra=data)


def _sdf_properties(lines: list[str], first: int) -> tuple[int | None, int | None, dict]:
    """`M  CHG` (replaces the atom block's charges), `M  RAD`, and `> <name>` data items."""
    charge = radicals = None
    data: dict = {}
    name = None
    for offset, line in enumerate(lines):
        if line.startswith(("M  CHG", "M  RAD")):
            try:
                fields = [int(f) for f in line[6:].split()]
            except ValueError:
                raise Broken(f"cannot read {line.rstrip()!r}", first + offset) from None
            values = fields[2::2]
            if line.startswith("M  CHG"):
                charge = (charge or 0) + sum(values)
            else:  # the MDL spec: 1 singlet (no unpaired), 2 doublet (1), 3 triplet (2)
                radicals = (radicals or 0) + sum(RAD_UNPAIRED.get(v, 0) for v in values)
        elif line.startswith(">"):
            match = re.search(r"<([^>]+)>", line)
            name = match.group(1) if match else None
        elif name is not None:
            if line.strip():
                data[name] = _fast_value(line.strip()) if name not in data else \
                    f"{data[name]}\n{line.strip()}"
            else:
                name = None
    multiplicity = None if radicals is None else radicals + 1
    return charge, multiplicity, data


# --- JSON Lines ----------------------------------------------------------------------------

def read_jsonl(handle: TextIO) -> Iterator[Item]:
    """One JSON object a line: id, elements, coordinates (Å), charge, multiplicity, extras."""
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield Molecule(*_jsonl_object(line), number)
        except Broken as exc:
            yield BrokenMolecule(number, str(exc))


def _jsonl_object(line: str) -> tuple[str | None, dict]:
    try:
        obj = json.loads(line)
    except RecursionError:
        raise Broken(f"JSON {depth_message(limit=max_json_depth())}") from None
    except ValueError as exc:
        raise Broken(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Broken(f"expected a JSON object, found {type(obj).__name__}")
    missing = [key for key in ("elements", "coordinates") if key not in obj]
    if missing:
        raise Broken(f"missing {', '.join(missing)}")
    elements, coordinates = obj.pop("elements"), obj.pop("coordinates")
    # The extras are copied by a function that recurses once a level: one nested past the limit
    # is one broken line, not a RecursionError. (elements and coordinates have fixed shapes,
    # checked below without recursion.) Most records have only scalar extras: no walk at all.
    extras = [value for value in obj.values() if isinstance(value, (dict, list))]
    if extras and too_deep(extras, limit=max_json_depth()):
        raise Broken(f"JSON {depth_message(limit=max_json_depth())}")
    if type(elements) is not list or {type(e) for e in elements} - {str}:
        raise Broken("elements must be a list of element symbols")
    if type(coordinates) is not list:
        raise Broken("coordinates must be a list of [x, y, z] rows")
    if len(coordinates) != len(elements):
        raise Broken(f"coordinates has {len(coordinates)} rows but elements has {len(elements)}")
    # Set comprehensions check every row at C speed; the loop below only names the bad one.
    if {type(r) for r in coordinates} - {list} or {len(r) for r in coordinates} - {3} or \
            {type(c) for row in coordinates for c in row} - {int, float}:
        for i, row in enumerate(coordinates):
            if not (type(row) is list and len(row) == 3 and all(type(c) in (int, float)
                                                                 for c in row)):
                raise Broken(f"coordinates[{i}] must be 3 numbers, got {json.dumps(row)[:60]}")
    elements = canonical_elements(elements)
    record_id = jsonl_record_id(obj.pop("id", None))
    charge, multiplicity = obj.pop("charge", None), obj.pop("multiplicity", None)
    return record_id, build_input(elements, coordinates, charge=charge,
                                  multiplicity=multiplicity, extra=obj)


def jsonl_record_id(value: Any) -> str | None:
    """A JSON record id: a non-empty string, or None (no id: the content gives one).

    A number is refused rather than converted: 12345 and "12345" (or 7 and 7.0) would become
    one id, and the second molecule would be taken as already present.
    """
    if value is None or (type(value) is str and value):
        return value
    if type(value) is str:
        raise Broken('"id" must be a non-empty string (got an empty one)')
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _refuse_id(f"the number {json.dumps(value)}", f'write "{json.dumps(value)}"')
    kind = {bool: "true/false", list: "a list", dict: "an object"}.get(type(value), "a value")
    return _refuse_id(f"{kind} {json.dumps(value)[:40]}", "write it in quotes")


def _refuse_id(got: str, fix: str) -> str:
    raise Broken(f'"id" must be a string (got {got}); {fix}')


# --- choosing a reader ---------------------------------------------------------------------

READERS: dict[str, Callable[[TextIO], Iterator[Item]]] = {
    ".xyz": read_xyz,
    ".extxyz": read_xyz,
    ".sdf": read_sdf,
    ".mol": read_sdf,
    ".jsonl": read_jsonl,
}


def reader_for(path: Path) -> Callable[[TextIO], Iterator[Item]]:
    """The reader for a file's extension; an unknown one is an error naming the known ones."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise RecordImportError(f"{path}: unknown molecule file extension "
                                f"{path.suffix or '(none)'!r} (supported: {', '.join(READERS)})")
    return reader
