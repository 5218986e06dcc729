"""Run one output parser on one file: `python -m workers.runtime.parse NAME FILE`.

Prints the parser's named values as one line of JSON on stdout, e.g.
`{"energy": {"value": -382.055108639253, "unit": "Eh"}}`. NAME is a registry parser name or
one of its aliases. On failure it prints one line on stderr (no traceback) and exits with:

  0  the values were printed
  2  usage error, unknown parser name, or a file that cannot be read
  3  the file does not hold what the parser reads: truncated, unfinished, or another
     program's output
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from . import registry
from .errors import ParseError

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own code for usage errors
EXIT_PARSE_ERROR = 3


def main(argv: Optional[List[str]] = None) -> int:
    """Parse FILE with parser NAME (from `argv` or the command line); return the exit code."""
    args = _argument_parser().parse_args(argv)
    try:
        parser = registry.load_parser(args.name)
    except registry.UnknownNameError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        # As the executor reads a stream or file: a stray non-UTF-8 byte must not hide a result.
        text = Path(args.file).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return _fail(f"{args.file}: cannot read: {exc.strerror or exc}", EXIT_USAGE)
    try:
        values = parser(text)
    except ParseError as exc:
        return _fail(f"{args.file}: {exc}", EXIT_PARSE_ERROR)
    print(json.dumps(values))
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"parse: {message}", file=sys.stderr)
    return code


def _argument_parser() -> argparse.ArgumentParser:
    names = "\n".join(f"  {entry.name:<20} {entry.description}" for entry in registry.PARSERS)
    parser = argparse.ArgumentParser(
        prog="python -m workers.runtime.parse",
        description="Run one output parser on one file and print its values as JSON.",
        epilog=f"parsers (the htrq.htrun.parser.* aliases are accepted too):\n{names}\n\n"
               "exit codes:\n"
               f"  {EXIT_OK}  the values were printed\n"
               f"  {EXIT_USAGE}  usage error, unknown parser name, or the file cannot be read\n"
               f"  {EXIT_PARSE_ERROR}  the file does not hold what the parser reads "
               "(truncated, unfinished, another program's output)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="parser name or alias (listed below)")
    parser.add_argument("file", metavar="FILE", help="the program output to parse")
    return parser


if __name__ == "__main__":
    sys.exit(main())
