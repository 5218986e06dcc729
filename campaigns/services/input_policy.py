"""What a program input may say: ORCA routes, xtb flags and Vina receptor names, checked on the
portal before any task is queued (docs/definitions.md).

A task's program runs on a grid node we do not own, with a scratch directory and a clean
environment; its input is text a user typed. Both ORCA's input language and xtb's command line
can start other programs or read files anywhere, so the text is checked against an allowlist,
and what falls outside it is refused unless the campaign is *trusted* (a flag only a staff user
can set, campaign_trust_check). Every check raises InputPolicyError with a message that names
the directive and says what is allowed; the caller prefixes the place (file, arg set).

What ORCA's input language allows. Read in the ORCA 6.0/6.1 manual and tutorials
(faccts.de/docs/orca/...):
- manual "General Structure of the Input File" (6.0 contents/structure, 6.1 essentialelements/
  input): `!` keyword lines, `%` blocks closed by `end`, coordinates between `*` lines or in a
  `%coords` block; `#` starts a comment that runs to the end of the line or to a second `#`;
  the input is not case-sensitive.
- tutorial "ORCA with External Methods" (6.1 tutorials/workflows/extopt): `! ExtOpt` with
  `%method ProgExt "/full/path/to/wrapperscript" Ext_Params "..." end` runs a program of the
  user's choosing as the energy and gradient source.
- manual "Compound Methods" (6.0 typical/compound, detailed/compound; 6.1 workflowsautomatization):
  `%Compound "file.cmp"` runs a script file, an inline `%Compound ... end` a script; the
  language has file handling (OpenFile, ReadMOs, G.Read, G.WriteXYZFile ...). Refused whole.
- manual "Choice of Initial Guess" (6.0 detailed/initguess): `%scf Guess MORead MOInp
  "Name.gbw" end` reads orbitals from the file named.
- manual "Input of Coordinates" (6.0 contents/input, 6.1 essentialelements/coordinates):
  coordinates "read from an external file"; the worker appends the record's own `* xyz`
  block, so a route needs no coordinates at all.
- manual "Basis Sets" (6.1 essentialelements/basisset, 6.0 detailed/basisset): "basis sets can
  be read from a file".
Known ORCA usage not re-read in the manual here, refused on the same grounds: `* xyzfile C M
path` and `%coords CTyp xyzfile`; the one-line `%moinp "file"`; `%basis GTOName "file"` and
its sibling `...Name` keys; `%geom InHessName "file"`; `%base "name"` (moves every output
file); `! NBO`/`NPA` (start the external NBO program); `! XTB` (starts otool_xtb); Compound's
system-command call, whose exact spelling was not confirmed (`sys_cmd`, `syscmd` and `system`
are refused as words, on top of `%compound` itself).

The rule, per piece of an untrusted route:
- `%` blocks only from SAFE_ORCA_BLOCKS (an allowlist).
- No keyword, key or value from ORCA_PROGRAM_WORDS (start a program) or ORCA_FILE_WORDS (read
  a file named in the input), nor any key ending in "name" or "inp" (GTOName, InHessName,
  MOInp ...), anywhere outside comments.
- No coordinates (a word starting with `*`), no `$new_job`, no `<` file inclusion.
- Every word, quoted or not, that looks like a path out of the scratch directory (leading `/`,
  `\\` or `~`, a drive letter, a `..` part, `$` or a backquote) is refused.
- Parsing is strict where ORCA's reader and ours could disagree: a quoted string must close on
  its line and may not hold `#`; `%` only starts a word. Every word is checked wherever it
  stands, so the check does not depend on knowing where a block ends.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterator, List, Optional, Tuple

from campaigns.errors import ApplicationError, DefinitionError

TRUST_RULE = "allowed only in a campaign a staff user marked trusted"
ROUTE_MAX_CHARS = 20_000

# %blocks a route may hold in a campaign that is not trusted; each is ORCA's own computation.
SAFE_ORCA_BLOCKS: Tuple[str, ...] = (
    "pal", "maxcore", "scf", "method", "basis", "output", "elprop", "cpcm", "tddft", "cis",
    "freq", "geom", "mp2", "mdci", "rel", "loc", "eprnmr",
)
ORCA_PROGRAM_WORDS = {
    "extopt": "starts an external program",
    "progext": "starts an external program",
    "ext_params": "passes arguments to an external program",
    "extparams": "passes arguments to an external program",
    "compound": "runs a Compound script, which can start programs and read files",
    "sys_cmd": "runs a system command",
    "syscmd": "runs a system command",
    "system": "runs a system command",
    "nbo": "starts the external NBO program",
    "npa": "starts the external NBO program",
    "xtb": "starts the external xtb program (otool_xtb)",
    "gfn0-xtb": "starts the external xtb program (otool_xtb)",
    "gfn1-xtb": "starts the external xtb program (otool_xtb)",
    "gfn2-xtb": "starts the external xtb program (otool_xtb)",
    "gfn-xtb": "starts the external xtb program (otool_xtb)",
    "gfn-ff": "starts the external xtb program (otool_xtb)",
}
ORCA_FILE_WORDS = {
    "moread": "reads orbitals from a file named in the input",
    "moinp": "reads orbitals from a file named in the input",
    # Not "xyzfile": `%output XYZFile true` writes one; reading needs `* xyzfile` or %coords,
    # both refused on their own.
    "gzmtfile": "reads coordinates from a file",
    "pdbfile": "reads coordinates from a file",
    "getbasis": "reads a basis set from a file",
    "readfile": "reads a file named in the input",
    "base": "moves the calculation's files to another name",
}
_KEY_SUFFIXES = (("name", "names a file to read (a basis set, a Hessian, ...)"),
                 ("inp", "names a file to read"))

XTB_LEVELS = ("crude", "sloppy", "loose", "lax", "normal", "tight", "vtight", "extreme")
XTB_SOLVENTS = (
    "acetone", "acetonitrile", "aniline", "benzaldehyde", "benzene", "ch2cl2", "chcl3", "cs2",
    "dioxane", "dmf", "dmso", "ether", "ethylacetate", "furane", "h2o", "hexadecane", "hexane",
    "n-hexane", "methanol", "nitromethane", "octanol", "woctanol", "phenol", "thf", "toluene",
    "water",
)
XTB_SOLVENT_STATES = ("reference", "bar1m")
# Option -> kind of value: None (no value), "level?" (an optional level), or a value check.
_XTB_NO_VALUE = ("--grad", "--hess", "--vip", "--vea", "--vipea", "--vomega", "--vfukui",
                 "--esp", "--pop", "--molden", "--dipole", "--wbo", "--lmo", "--fod",
                 "--norestart", "--verbose", "--silent", "--strict", "--json", "--sp", "--md",
                 "--omd", "--gfnff", "--spinpol")
_XTB_OPTIONAL_LEVEL = ("--opt", "--ohess")
_XTB_NUMBERS = {  # option: (integer?, minimum, maximum)
    "--gfn": (True, 0, 2),
    "--acc": (False, 1e-4, 1000.0),
    "--iterations": (True, 1, 10_000),
    "--cycles": (True, 1, 100_000),
    "--etemp": (False, 1e-3, 100_000.0),
    "--parallel": (True, 1, 256),
}
_XTB_SOLVATION = ("--alpb", "--gbsa")
_XTB_ELSEWHERE = {"--chrg": "charge", "--uhf": "uhf"}
XTB_OPTIONS: Tuple[str, ...] = tuple(sorted(
    (*_XTB_NO_VALUE, *_XTB_OPTIONAL_LEVEL, *_XTB_NUMBERS, *_XTB_SOLVATION)))
XTB_FLAGS_MAX = 40

VINA_RESERVED_NAMES = ("ligand.pdbqt", "out.pdbqt")
_VINA_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}\.pdbqt\Z")


class InputPolicyError(DefinitionError):
    """A program input that the policy refuses; the message names the directive."""


class TrustError(ApplicationError):
    """A user who may not mark a campaign trusted asked to (API: 403)."""


# --- trust --------------------------------------------------------------------------------

def user_may_trust(user: Any) -> bool:
    """Whether `user` may mark a campaign trusted: an active staff user or superuser."""
    return bool(user is not None and getattr(user, "is_active", False)
                and (getattr(user, "is_staff", False) or getattr(user, "is_superuser", False)))


def campaign_trust_check(*, user: Any, trusted: bool) -> None:
    """Raise TrustError unless `user` may ask for `trusted` (False is always allowed).

    user None means a manage.py command: its operator already holds the portal's host.
    """
    if trusted and user is not None and not user_may_trust(user):
        raise TrustError(f"only a staff user may mark a campaign trusted "
                         f"({getattr(user, 'username', user)!s} is not staff)")


# --- the entry point ----------------------------------------------------------------------

def program_input_check(*, function: str, parameters: dict, trusted: bool) -> None:
    """Refuse parameters of `function` (canonical name) that the policy does not allow.

    trusted: the campaign is marked trusted, which lifts the ORCA and xtb allowlists (the
    Vina rules stay: they keep the worker's own files apart, not the user's reach).
    """
    if function == "orca.sequential" and "route" in parameters and not trusted:
        orca_route_check(parameters["route"])
    elif function == "xtb.run" and "flags" in parameters and not trusted:
        xtb_flags_check(parameters["flags"])
    elif function == "vina.dock" and isinstance(parameters.get("receptor"), dict):
        vina_receptor_name_check(parameters["receptor"].get("name"))


def campaign_inputs_check(*, campaign: Any) -> None:
    """Check every arg set of a saved campaign under its current trust; raise on the first bad.

    For doors that change a campaign without re-importing it (launch, clone, a bulk update of
    the flag): the message starts with the arg set's name.
    """
    # Imported here: definition_schema calls this module for every arg set it checks.
    from campaigns.selectors import campaign_arg_sets
    from campaigns.services.definition_schema import check_parameters

    for arg_set in campaign_arg_sets(campaign=campaign):
        try:
            check_parameters(campaign.function, arg_set.parameters, trusted=campaign.trusted)
        except DefinitionError as exc:
            raise InputPolicyError(f"campaign {campaign.name!r}: arg set {arg_set.name!r}: "
                                   f"{exc}") from None


def _refuse(directive: str, why: str) -> InputPolicyError:
    return InputPolicyError(f"ORCA directive {directive!r} {why}; {TRUST_RULE}")


# --- ORCA -----------------------------------------------------------------------------------

class _Word:
    __slots__ = ("text", "quoted", "line")

    def __init__(self, text: str, quoted: bool, line: int):
        self.text, self.quoted, self.line = text, quoted, line


_SPLIT = re.compile(r"[\s=,;{}()\[\]]+")


def _orca_words(route: str) -> Iterator[_Word]:
    """The route's words, comments dropped, quoted strings as one word each."""
    for number, line in enumerate(route.splitlines(), start=1):
        for piece, quoted in _orca_line_pieces(line, number):
            if quoted:
                yield _Word(piece, True, number)
                continue
            for text in _SPLIT.split(piece):
                if text:
                    yield _Word(text, False, number)


def _orca_line_pieces(line: str, number: int) -> List[Tuple[str, bool]]:
    """One line as (text, quoted) pieces without comments; `#a#` comments close on a second #."""
    pieces: List[Tuple[str, bool]] = []
    plain, i = [], 0
    while i < len(line):
        char = line[i]
        if char == "#":
            end = line.find("#", i + 1)
            # Reading "#a# b" as "b" keeps more text live than ORCA might: the safe side.
            i = len(line) if end < 0 else end + 1
            plain.append(" ")
        elif char in "\"'":
            end = line.find(char, i + 1)
            if end < 0:
                raise InputPolicyError(f"ORCA input line {number}: the quoted string at "
                                       f"column {i + 1} is not closed on its line")
            text = line[i + 1:end]
            if "#" in text:
                raise InputPolicyError(f"ORCA input line {number}: a quoted string may not hold "
                                       f"'#' (ORCA could read it as a comment)")
            pieces.append(("".join(plain), False))
            pieces.append((text, True))
            plain, i = [], end + 1
        else:
            plain.append(char)
            i += 1
    pieces.append(("".join(plain), False))
    return pieces


_WORD_PART = re.compile(r"[^a-z0-9_-]+")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")


def _path_problem(text: str) -> Optional[str]:
    """Why `text` reaches out of the scratch directory, or None."""
    if text.startswith(("/", "\\", "~")) or _DRIVE.match(text):
        return "is an absolute path"
    if ".." in re.split(r"[\\/]", text):
        return "climbs out of the scratch directory ('..')"
    if "$" in text or "`" in text:
        return "holds '$' or '`' (variable or command expansion)"
    return None


def orca_route_check(route: Any) -> None:
    """Refuse an ORCA route (keyword lines and %blocks) outside the untrusted allowlist."""
    if not isinstance(route, str):
        raise InputPolicyError("route must be text")
    if len(route) > ROUTE_MAX_CHARS:
        raise InputPolicyError(f"route is {len(route)} characters, more than {ROUTE_MAX_CHARS}")
    # Every word is checked wherever it stands: no need to know which block holds it, so
    # nested `end`s (Constraints ... end end) and blocks on one line need no parsing.
    after_percent = False
    for word in _orca_words(route):
        text, lower = word.text, word.text.lower()
        if not word.quoted and text.startswith("$"):
            raise _refuse(text, "starts another job")
        problem = _path_problem(text)
        if problem:
            raise InputPolicyError(f"ORCA input line {word.line}: {text!r} {problem}: a route "
                                   f"names no file outside the task's scratch directory; "
                                   f"{TRUST_RULE}")
        if word.quoted:
            _check_orca_word(text, lower, quoted=True)
            after_percent = False
            continue
        if after_percent:  # "% scf": the block's name is the next word
            _check_block(lower, f"%{text}")
            after_percent = False
            continue
        if text.startswith("*"):  # "* xyz 0 1", also mid-line: ORCA may read it there
            raise _refuse("*", "gives coordinates: the worker adds the record's own; a route "
                               "holds keyword lines and %blocks only")
        if text.startswith("<"):
            raise _refuse(text, "includes a file")
        if "%" in text[1:]:
            raise InputPolicyError(f"ORCA input line {word.line}: {text!r}: '%' may only "
                                   f"start a block name")
        if text == "%":
            after_percent = True
        elif text.startswith("%"):
            _check_block(lower[1:], text)
        else:
            _check_orca_word(text, lower, quoted=False)
    if after_percent:
        raise InputPolicyError("ORCA input: '%' at the end names no block")


def _check_block(name: str, text: str) -> None:
    if name not in SAFE_ORCA_BLOCKS:
        reason = ORCA_PROGRAM_WORDS.get(name) or ORCA_FILE_WORDS.get(name)
        if reason:
            raise _refuse(text, reason)
        raise _refuse(text, f"is not an ORCA block this portal allows "
                            f"(allowed: {', '.join('%' + b for b in SAFE_ORCA_BLOCKS)})")


def _check_orca_word(text: str, lower: str, *, quoted: bool) -> None:
    # Unquoted: every run of letters, digits, '_' and '-' on its own ("QM/XTB", "!ExtOpt",
    # "a:ExtOpt"), in case ORCA splits a word where we do not.
    parts = [lower] if quoted else [p for p in _WORD_PART.split(lower) if p]
    for part in parts:
        reason = ORCA_PROGRAM_WORDS.get(part) or ORCA_FILE_WORDS.get(part)
        if reason:
            raise _refuse(text if quoted else text.strip("!"), reason)
        if quoted:
            continue
        for suffix, why in _KEY_SUFFIXES:
            if part.endswith(suffix) and part != suffix and part.isidentifier():
                raise _refuse(text, why)


# --- xtb --------------------------------------------------------------------------------------

def xtb_flags_check(flags: Any) -> None:
    """Refuse xtb command-line words outside the allowlist (XTB_OPTIONS), with their values."""
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise InputPolicyError("flags must be a list of command-line words")
    if len(flags) > XTB_FLAGS_MAX:
        raise InputPolicyError(f"flags: {len(flags)} words, more than {XTB_FLAGS_MAX}")
    words = list(flags)
    while words:
        option = words.pop(0)
        words = _xtb_option(option, words)


def _xtb_refuse(option: str, why: str) -> InputPolicyError:
    return InputPolicyError(f"xtb flag {option!r} {why}; {TRUST_RULE}")


def _xtb_option(option: str, rest: List[str]) -> List[str]:
    """Check one option and its values; return the words after them."""
    if option in _XTB_ELSEWHERE:
        raise InputPolicyError(f"xtb flag {option!r}: set the parameter "
                               f"{_XTB_ELSEWHERE[option]!r} instead")
    if option in _XTB_NO_VALUE:
        return rest
    if option in _XTB_OPTIONAL_LEVEL:
        if rest and rest[0].lower() in XTB_LEVELS:
            return rest[1:]
        return rest
    if option in _XTB_NUMBERS:
        if not rest:
            raise InputPolicyError(f"xtb flag {option!r} needs a number")
        _xtb_number(option, rest[0])
        return rest[1:]
    if option in _XTB_SOLVATION:
        if not rest or rest[0].lower() not in XTB_SOLVENTS:
            got = f"got {rest[0]!r}" if rest else "got nothing"
            raise InputPolicyError(f"xtb flag {option!r} needs a solvent name ({got}; known: "
                                   f"{', '.join(XTB_SOLVENTS)})")
        if len(rest) > 1 and rest[1].lower() in XTB_SOLVENT_STATES:
            return rest[2:]
        return rest[1:]
    if "=" in option and option.split("=", 1)[0] in XTB_OPTIONS:
        raise InputPolicyError(f"xtb flag {option!r}: give the option and its value as two "
                               f"words, e.g. ['--alpb', 'water']")
    if not option.startswith("-"):
        raise InputPolicyError(f"xtb flag {option!r} is not an option this portal allows "
                               f"(a value must follow its option; options: "
                               f"{', '.join(XTB_OPTIONS)})")
    problem = _path_problem(option) or ("names a file" if "/" in option else None)
    why = problem or "is not an option this portal allows (it may read or write files " \
                     "outside the task's reach)"
    raise _xtb_refuse(option, f"{why} (allowed: {', '.join(XTB_OPTIONS)})")


def _xtb_number(option: str, text: str) -> None:
    integer, low, high = _XTB_NUMBERS[option]
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise InputPolicyError(f"xtb flag {option!r} needs {kind}, got {text!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise InputPolicyError(f"xtb flag {option!r} {text!r} is out of range "
                               f"({low:g} to {high:g})")


# --- Vina -------------------------------------------------------------------------------------

def vina_receptor_name_check(name: Any) -> str:
    """A receptor file name the worker writes in the scratch directory: plain, *.pdbqt."""
    if not isinstance(name, str) or not _VINA_NAME_RE.match(name) or ".." in name \
            or name in VINA_RESERVED_NAMES:
        raise InputPolicyError(
            f"receptor name {name!r} must be a plain file name ending in .pdbqt (letters, "
            f"digits, '.', '_' and '-', starting with a letter or digit, at most 100 "
            f"characters; no path), other than {' and '.join(VINA_RESERVED_NAMES)}")
    return name

