"""A pool's batch script (SLURM) or submit description (HTCondor), rendered from its template.

Placeholders are `{name}` with a name from PLACEHOLDERS, plus `{jobs-1}` (the last array
index, for `#SBATCH --array=0-{jobs-1}`). Everything else is left as written, so shell
variables (`$HOME`, `${SLURM_ARRAY_TASK_ID}`), shell braces (`f() { ...; }`) and HTCondor
macros (`$(Cluster)`) need no escaping; `{{name}}` gives a literal `{name}`. An unknown
placeholder is refused with the list of known ones rather than left in the script, where
it would only fail on a grid node hours later.

Values are inserted as they are, not shell-quoted: the templates quote paths themselves.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict

from workers.scaler.base import ScalerError

DEFAULT_TEMPLATES = Path(__file__).resolve().parent / "default_templates"
DEFAULT_FILES = {"slurm": "slurm.sh", "condor": "condor.sub"}
# `{name}` or `{jobs-1}`, not preceded by `$` (shell's `${VAR}`); `{{...}}` is the escape.
_PLACEHOLDER = re.compile(r"\{\{(?P<literal>[^{}]*)\}\}|(?<!\$)\{(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:-1)?)\}")


class TemplateError(ScalerError):
    """The pool's template names a placeholder that does not exist, or a value is missing."""


@dataclass(frozen=True)
class TemplateValues:
    """What a template may use; each field is one placeholder of the same name."""

    bundle: str             # remote path of the worker bundle (.pyz)
    env_file: str           # remote path of the 0600 file holding HTPORTAL_REDIS_URL=...
    queues: str             # the RQ queues, space-separated, highest priority first
    max_idle: int           # worker options, seconds / tasks (each must be > 0)
    max_runtime: int
    max_tasks: int
    jobs: int               # batch jobs (array tasks / procs) in this submission
    workers_per_job: int
    work_dir: str           # remote directory the script is written to and run from
    log_dir: str            # remote directory for the batch system's output/error/log files
    setup: str = ""         # shell lines run before the workers (module load ..., conda ...)
    # HTCondor only (workers/scaler/condor.py): the submit commands made from the pool's
    # settings (requests, container_image, +JobDurationCategory, hold policy ...), and
    # transfer_input_files' list (bundle, env file, the pool's extra input files).
    submit_settings: str = ""
    input_files: str = ""

    def mapping(self) -> Dict[str, str]:
        values = {name: str(value) for name, value in asdict(self).items()}
        values["jobs-1"] = str(self.jobs - 1)
        values["input_files"] = self.input_files or f"{self.bundle}, {self.env_file}"
        return values


PLACEHOLDERS = tuple(TemplateValues.__dataclass_fields__) + ("jobs-1",)


def default_template(kind: str) -> str:
    """The default template of a pool kind ("slurm" or "condor")."""
    try:
        return (DEFAULT_TEMPLATES / DEFAULT_FILES[kind]).read_text()
    except KeyError:
        raise TemplateError(f"no default template for pool kind {kind!r} "
                            f"(known: {', '.join(DEFAULT_FILES)})") from None


def template_check(template: str) -> None:
    """TemplateError naming every unknown placeholder (for the admin's form, before a render)."""
    unknown = sorted({match["name"] for match in _PLACEHOLDER.finditer(template)
                      if match["name"] and match["name"] not in PLACEHOLDERS})
    if unknown:
        names = ", ".join("{%s}" % name for name in unknown)
        raise TemplateError(f"unknown placeholder{'s' if len(unknown) > 1 else ''} {names} in "
                            f"the template (known: {', '.join(PLACEHOLDERS)}; write {{{{name}}}} "
                            f"for a literal {{name}})")


def template_render(template: str, values: TemplateValues) -> str:
    """The template with its placeholders filled in."""
    template_check(template)
    if values.jobs < 1 or values.workers_per_job < 1:
        raise TemplateError(f"jobs and workers_per_job must be 1 or more "
                            f"(got {values.jobs} and {values.workers_per_job})")
    mapping = values.mapping()

    def fill(match: re.Match) -> str:
        if match["literal"] is not None:
            return "{" + match["literal"] + "}"
        return mapping[match["name"]]

    return _PLACEHOLDER.sub(fill, template)
