"""The rules a campaign definition obeys, as pure checks shared by the YAML import and the models.

Each check takes a value, returns it in canonical form (registry aliases resolved) and raises
DefinitionError with a message that says what is wrong and what is allowed, but not where: the
caller knows the place (a file and key, or an admin field) and prefixes it. Nothing here touches
the database.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from campaigns.errors import DefinitionError
from campaigns.services import input_policy
from workers.runtime import errors as runtime_errors
from workers.runtime import keepfiles, registry

PRIORITIES: Tuple[str, ...] = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"
DEFAULT_QUEUE = "default"
DEFAULT_JOB_TIMEOUT = 3600
DEFAULT_MAX_ATTEMPTS = 3
NAME_MAX_LENGTH = 100

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")
NAME_RULE = f"letters, digits, _ and - only, at most {NAME_MAX_LENGTH} characters"
QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z"
_QUEUE_RE = re.compile(QUEUE_PATTERN)
QUEUE_RULE = "a letter or digit, then letters, digits, _, . and -"

Check = Callable[[Any, Optional[Path]], Any]


def check_name(value: Any, what: str) -> str:
    """A slug-safe name (campaign, arg set, output key)."""
    if not isinstance(value, str) or not value:
        raise DefinitionError(f"{what} is missing ({NAME_RULE})")
    if len(value) > NAME_MAX_LENGTH or not _NAME_RE.match(value):
        raise DefinitionError(f"{what} {value!r} is not a valid name ({NAME_RULE})")
    return value


def check_whole_number(value: Any, what: str, minimum: Optional[int]) -> int:
    # YAML reads `yes` as True, and bool is an int in Python: refuse it explicitly.
    if isinstance(value, bool) or not isinstance(value, int):
        raise DefinitionError(f"{what} {value!r} is not a whole number")
    if minimum is not None and value < minimum:
        raise DefinitionError(f"{what} {value!r} is not a whole number of at least {minimum}")
    return value


def check_queue_name(value: Any) -> str:
    if not isinstance(value, str) or not _QUEUE_RE.match(value) or len(value) > NAME_MAX_LENGTH:
        raise DefinitionError(f"queue name {value!r} is not allowed ({QUEUE_RULE})")
    return value


def parse_queue(value: Any) -> Tuple[str, str]:
    """'name:priority' (or just 'name', normal priority) -> (name, priority)."""
    allowed = f"expected 'name:priority' with priority one of {', '.join(PRIORITIES)}"
    if not isinstance(value, str):
        raise DefinitionError(f"queue {value!r} is not text ({allowed})")
    name, sep, priority = value.partition(":")
    if sep and priority not in PRIORITIES:
        raise DefinitionError(f"queue {value!r}: unknown priority {priority!r} ({allowed})")
    try:
        check_queue_name(name)
    except DefinitionError as exc:
        raise DefinitionError(f"queue {value!r}: {exc} ({allowed})") from None
    return name, priority if sep else DEFAULT_PRIORITY


def format_queue(name: str, priority: str) -> str:
    return f"{name}:{priority}"


def check_task_name(value: Any) -> str:
    try:
        return registry.canonical_task_name(value)
    except registry.UnknownNameError as exc:
        raise DefinitionError(str(exc)) from None


def check_parsers(value: Any) -> Dict[str, List[str]]:
    """{stream or file name: [parser names]} with every name canonical."""
    if not isinstance(value, dict):
        raise DefinitionError("parsers must map a stream or file name to a list of parser names")
    checked: Dict[str, List[str]] = {}
    for stream, names in value.items():
        if not isinstance(stream, str) or not stream or not isinstance(names, list):
            raise DefinitionError(f"parsers: {stream!r} must map to a list of parser names")
        try:
            checked[stream] = [registry.parser_entry(name).name for name in names]
        except registry.UnknownNameError as exc:
            raise DefinitionError(str(exc)) from None
    return checked


def check_keep_files(value: Any) -> Dict[str, str]:
    """{stream or file name: name pattern}; each pattern holds {id}, so records never collide."""
    if not isinstance(value, dict):
        raise DefinitionError("keep_files must map a stream or file name to a name pattern with {id}")
    for stream, pattern in value.items():
        if not isinstance(stream, str) or not stream:
            raise DefinitionError(f"keep_files: {stream!r} is not a stream or file name")
        where = f"keep_files: {stream}"
        try:
            keepfiles.check_pattern(pattern, where=where)  # the worker's own rule
        except runtime_errors.InputError as exc:
            raise DefinitionError(str(exc)) from None
        if "{id}" not in pattern:
            raise DefinitionError(f"{where}: kept file name {pattern!r} must contain {{id}}, "
                                  "or every record would write the same file")
    return dict(value)


def check_query(value: Any) -> dict:
    # Imported when used: the query language may need the models, and the models import this.
    from campaigns.query import validate_query

    if not isinstance(value, dict):
        raise DefinitionError(f"query {value!r} must be a mapping (a MongoDB-style filter)")
    validate_query(value)
    return value


def check_projection(value: Any) -> List[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DefinitionError(f"projection {value!r} must be a list of field names")
    return value


# --- parameters, per task function ---------------------------------------------------------

def _text(key: str) -> Check:
    def check(value: Any, base_dir: Optional[Path]) -> str:
        if not isinstance(value, str) or not value.strip():
            raise DefinitionError(f"{key} must be non-empty text")
        return value
    return check


def _one_of(key: str, *allowed: str) -> Check:
    def check(value: Any, base_dir: Optional[Path]) -> str:
        if value not in allowed:
            raise DefinitionError(f"{key} {value!r} is not allowed (allowed: {', '.join(allowed)})")
        return value
    return check


def _integer(key: str, minimum: Optional[int], maximum: Optional[int] = None) -> Check:
    def check(value: Any, base_dir: Optional[Path]) -> int:
        check_whole_number(value, key, minimum)
        if maximum is not None and value > maximum:
            raise DefinitionError(f"{key} {value!r} is more than {maximum}")
        return value
    return check


def _is_number(value: Any) -> bool:
    """A finite int or float; YAML's .nan and .inf are floats too, and bool is an int."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _number(key: str, minimum: float) -> Check:
    def check(value: Any, base_dir: Optional[Path]) -> float:
        if not _is_number(value) or value < minimum:
            raise DefinitionError(f"{key} {value!r} is not a finite number of at least {minimum}")
        return value
    return check


def _boolean(key: str) -> Check:
    def check(value: Any, base_dir: Optional[Path]) -> bool:
        if not isinstance(value, bool):
            raise DefinitionError(f"{key} {value!r} must be true or false")
        return value
    return check


def _bounded(key: str, minimum: float, maximum: float) -> Check:
    def check(value: Any, base_dir: Optional[Path]) -> float:
        if not _is_number(value) or not minimum <= value <= maximum:
            raise DefinitionError(f"{key} {value!r} is not a number from {minimum} to {maximum}")
        return value
    return check


def _sampling():
    from campaigns.services import sampling  # imports the models; this module is imported by them
    return sampling


def _vector3(key: str, positive: bool, limit: float) -> Check:
    def check(value: Any, base_dir: Optional[Path]) -> list:
        ok = isinstance(value, list) and len(value) == 3 and all(
            _is_number(v) and (v > 0 or not positive) and abs(v) <= limit for v in value
        )
        if not ok:
            kind = "positive numbers" if positive else "numbers"
            raise DefinitionError(f"{key} {value!r} must be a list of 3 finite {kind} of at "
                                  f"most {limit:g} in size (Å)")
        return value
    return check


def _flags(value: Any, base_dir: Optional[Path]) -> List[str]:
    # Which words are allowed is input_policy's (xtb_flags_check), since a trusted campaign
    # may use more; here only the shape.
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise DefinitionError(f"flags {value!r} must be a list of command-line words, "
                          "e.g. ['--alpb', 'water']")


def _receptor(value: Any, base_dir: Optional[Path]) -> Dict[str, str]:
    """An inline {name, content} receptor, or a path (relative to the definition file) read now."""
    if isinstance(value, dict):
        if set(value) != {"name", "content"} or not all(isinstance(v, str) and v for v in value.values()):
            raise DefinitionError("receptor must be a path or a mapping of exactly name and content")
        return _receptor_named(value)
    if not isinstance(value, str) or not value:
        raise DefinitionError("receptor must be a path or a mapping of exactly name and content")
    if base_dir is None:
        # An uploaded file has no directory: reading a path would read the portal's own disk.
        raise DefinitionError(
            f"receptor {value!r} is a path, which only import_campaign reads; "
            "give the receptor inline as {name, content}"
        )
    path = base_dir / value
    try:
        content = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"receptor {value!r}: cannot read {path}: {exc}") from None
    return _receptor_named({"name": path.name, "content": content})


def _receptor_named(receptor: Dict[str, str]) -> Dict[str, str]:
    # The worker writes the receptor under its name next to ligand.pdbqt (tasks/vina.py).
    input_policy.vina_receptor_name_check(receptor["name"])
    return receptor


VINA_CENTER_LIMIT = 10_000.0  # Å from the origin
VINA_SIZE_LIMIT = 500.0  # Å a side; vina itself warns above 30

# Key order here is the order of the exported file.
PARAMETERS: Dict[str, Dict[str, Check]] = {
    "orca.sequential": {"route": _text("route")},
    "xtb.run": {
        "method": _one_of("method", "gfn2", "gfn1", "gfnff"),
        "task": _one_of("task", "sp", "grad", "opt"),
        "charge": _integer("charge", None),
        "uhf": _integer("uhf", 0),
        "flags": _flags,
        "gradient": _boolean("gradient"),
    },
    # xtb molecular dynamics / metadynamics (workers/runtime/tasks/xtb_md.py).
    "xtb.md": {
        "method": _one_of("method", "gfn2", "gfn1", "gfnff"),
        "mode": _one_of("mode", "md", "metadyn"),
        "temperature": _bounded("temperature", 1, 10000),
        "time": _bounded("time", 0.001, 100000),
        "step": _bounded("step", 0.01, 10),
        "dump": _bounded("dump", 0.01, 100000),
        "shake": _bounded("shake", 0, 2),
        "hmass": _integer("hmass", 1),
        "charge": _integer("charge", None),
        "uhf": _integer("uhf", 0),
        "kpush": _bounded("kpush", 0, 10),
        "alp": _bounded("alp", 0, 100),
        "save": _integer("save", 1),
        "sample": lambda value, base_dir: _sampling().check_sample(value),
    },
    "vina.dock": {
        "receptor": _receptor,
        "center": _vector3("center", positive=False, limit=VINA_CENTER_LIMIT),
        "size": _vector3("size", positive=True, limit=VINA_SIZE_LIMIT),
        "exhaustiveness": _integer("exhaustiveness", 1, 1024),
        "num_modes": _integer("num_modes", 1, 100),
        "cpu": _integer("cpu", 1, 256),
        "seed": _integer("seed", -2**31, 2**31 - 1),  # vina's seed is a C int
        "max_evals": _integer("max_evals", 1, 10**10),
    },
    "noop": {},
    "sleep": {"seconds": _number("seconds", 0)},
}
REQUIRED_PARAMETERS: Dict[str, Tuple[str, ...]] = {
    "orca.sequential": ("route",),
    "vina.dock": ("receptor", "center", "size"),
    "sleep": ("seconds",),
}


def parameter_keys(function: str) -> List[str]:
    return list(PARAMETERS.get(function, {}))


def check_parameters(function: str, value: Any, base_dir: Optional[Path] = None, *,
                     trusted: bool = False) -> Dict[str, Any]:
    """The parameters of one arg set of `function` (canonical name), checked, in schema order.

    The program inputs (ORCA route, xtb flags, Vina receptor name) go through input_policy as
    well; `trusted` (the campaign's flag) lifts its allowlists.
    """
    if not isinstance(value, dict):
        raise DefinitionError("parameters must be a mapping")
    schema = PARAMETERS.get(function, {})
    for key in value:
        if key not in schema:
            allowed = ", ".join(schema) or "none"
            raise DefinitionError(f"unknown parameter {key!r} for {function} (allowed: {allowed})")
    for key in REQUIRED_PARAMETERS.get(function, ()):
        if key not in value:
            raise DefinitionError(f"missing parameter {key!r} for {function}")
    checked = {key: check(value[key], base_dir) for key, check in schema.items() if key in value}
    input_policy.program_input_check(function=function, parameters=checked, trusted=trusted)
    return checked
