"""Job definition files: parse and check one (no database), import it as a campaign, export one.

The format is the original HTRQ system's (examples/wb97mv.yaml), read as it stands:

    campaign: NAME
    dataset: NAME                      # htportal only, optional (--dataset overrides it)
    notes: TEXT                        # htportal only, optional
    campaign_config:
      func_name: FUNCTION              # registry name or one of its HTRQ aliases
      job_timeout: SECONDS
      max_attempts: N                  # htportal only, optional
      args: [{name, <parameters of FUNCTION>, parsers: {stream: [names]}, keep_files: {stream: pattern}}]
      kwargs: {mongo_output_key: KEY}
    submit: {query: FILTER, projection: [FIELDS], queue: "name:priority"}

Every key must be known. Errors name the source, the place in it and the problem.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml
from django.conf import settings
from django.db import router, transaction

from campaigns.bounds import depth_message, max_json_depth
from campaigns.errors import ApplicationError, DefinitionError
from campaigns.models import ArgSet, Campaign, Dataset
from campaigns.selectors import campaign_arg_sets, dataset_names
from campaigns.services import definition_schema as schema
from campaigns.services import input_policy

TOP_KEYS = ("campaign", "dataset", "notes", "campaign_config", "submit")
CONFIG_KEYS = ("func_name", "job_timeout", "max_attempts", "args", "kwargs")
KWARGS_KEYS = ("mongo_output_key",)
SUBMIT_KEYS = ("query", "projection", "queue")
ARG_SET_KEYS = ("name", "parsers", "keep_files")  # plus the function's parameters
REPLACEABLE_STATES = (Campaign.State.DRAFT, Campaign.State.DONE, Campaign.State.FAILED,
                      Campaign.State.CANCELLED)


@dataclass(frozen=True)
class ArgSetDefinition:
    name: str
    parameters: Dict[str, Any]
    parsers: Dict[str, List[str]]
    keep_files: Dict[str, str]


@dataclass(frozen=True)
class CampaignDefinition:
    """A checked job definition; names are canonical, nothing is in the database yet."""

    source: str
    name: str
    dataset: Optional[str]
    notes: str
    function: str
    job_timeout: int
    max_attempts: int
    output_key: str
    arg_sets: Tuple[ArgSetDefinition, ...]
    query: Dict[str, Any]
    projection: List[str]
    queue: str
    priority: str
    # Checked under the trusted rules (input_policy); campaign_import needs a staff user then.
    trusted: bool = False


class _Places:
    """Prefixes a check's DefinitionError with the source and the place in it."""

    def __init__(self, source: str):
        self.source = source

    def check(self, place: str, check: Callable[..., Any], *args: Any) -> Any:
        try:
            return check(*args)
        except ApplicationError as exc:  # QueryError from the query language too
            raise DefinitionError(f"{self.source}: {place}: {exc}") from None

    def mapping(self, place: str, value: Any, allowed: Sequence[str],
                required: Sequence[str] = ()) -> Dict[str, Any]:
        return self.check(place, _check_mapping, value, allowed, required)


def _check_mapping(value: Any, allowed: Sequence[str], required: Sequence[str]) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise DefinitionError(f"expected a mapping with keys {', '.join(allowed)}, got {value!r}")
    for key in value:
        if key not in allowed:
            raise DefinitionError(f"unknown key {key!r} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise DefinitionError(f"missing key {key!r}")
    return value


class _TooBig(yaml.YAMLError):
    """A YAML document over a bound: the message says which, and its variable."""


class _StrictLoader(yaml.SafeLoader):
    """yaml's safe loader, except that a key written twice in one mapping is an error, and that a
    document is bounded: at most settings.MAX_JSON_DEPTH levels of nesting and
    settings.YAML_MAX_NODES nodes once aliases are expanded, no recursive alias.

    Plain YAML keeps the last value silently, which would drop what the user wrote first. And an
    alias costs nothing to write but everything to expand: a 600-byte "billion laughs" file is
    10^9 nodes to whatever walks the result (the query compiler, the JSON encoder), so the
    composed graph is measured, each alias counted at its full size, before anything is built.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.max_depth = max_json_depth()
        self.max_nodes = int(getattr(settings, "YAML_MAX_NODES", 100_000))
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > self.max_depth:
                raise _TooBig(f"{_mark_text(self.peek_event().start_mark)}: "
                              f"{depth_message(limit=self.max_depth)}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self):
        node = super().compose_document()
        self._measure(node, 0, {}, set())
        return node

    def _measure(self, node: yaml.Node, depth: int, done: Dict[int, Tuple[int, int]],
                 open_: set) -> int:
        """The node's size with aliases expanded (memoised: a shared node is measured once);
        _TooBig past a bound. `done` holds (size, levels) by node id."""
        if id(node) in done:
            size, levels = done[id(node)]
            if depth + levels > self.max_depth:
                raise _TooBig(f"{_mark_text(node.start_mark)}: an alias of this makes the "
                              f"document {depth_message(limit=self.max_depth)}")
            return size
        if id(node) in open_:
            raise _TooBig(f"{_mark_text(node.start_mark)}: a recursive alias (a node that "
                          "contains itself) is not allowed")
        if isinstance(node, yaml.ScalarNode):
            done[id(node)] = (1, 0)
            return 1
        if depth + 1 > self.max_depth:
            raise _TooBig(f"{_mark_text(node.start_mark)}: {depth_message(limit=self.max_depth)}")
        open_.add(id(node))
        children = ([part for pair in node.value for part in pair]
                    if isinstance(node, yaml.MappingNode) else node.value)
        size, levels = 1, 1
        for child in children:
            size += self._measure(child, depth + 1, done, open_)
            levels = max(levels, 1 + done[id(child)][1])
            if size > self.max_nodes:
                raise _TooBig(f"the document has more than {self.max_nodes:,} YAML nodes with "
                              "its aliases expanded (each use of an alias counts its whole "
                              "value), over the limit (HTPORTAL_YAML_MAX_NODES)")
        open_.discard(id(node))
        done[id(node)] = (size, levels)
        return size

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; construct_mapping reports it below
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"key {key!r} appears twice (first at {_mark_text(first)})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str, source: str) -> Any:
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _TooBig as exc:
        raise DefinitionError(f"{source}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        # The problem mark is where yaml gave up; the context mark, where the broken part began.
        where = f"{_mark_text(exc.problem_mark)}: " if exc.problem_mark else ""
        message = f"{source}: {where}malformed YAML: {exc.problem}"
        if exc.context:
            started = f" started at {_mark_text(exc.context_mark)}" if exc.context_mark else ""
            message += f" ({exc.context}{started})"
        raise DefinitionError(message) from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{source}: malformed YAML: {exc}") from None
    _check_finite(document, source)
    return document


def _check_finite(document: Any, source: str) -> None:
    """DefinitionError naming the first .inf or .nan in the document by its place
    (campaign_config.args[0].temperature): no program, query or JSON column takes one."""
    stack: List[Tuple[str, Any]] = [("", document)]
    while stack:
        place, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            spelled = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
            raise DefinitionError(f"{source}: {place or 'top level'}: {spelled} is not a finite "
                                  "number (.inf, -.inf and .nan are not allowed)")
        if isinstance(value, dict):
            stack.extend((f"{place}.{key}" if place else str(key), item)
                         for key, item in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((f"{place}[{index}]", item)
                         for index, item in reversed(list(enumerate(value))))


def _mark_text(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def campaign_definition_parse(*, text: str, source: str, base_dir: Optional[Path] = None,
                              trusted: bool = False) -> CampaignDefinition:
    """Check a whole job definition file and return it in canonical form; touches no database.

    source names the file in error messages. base_dir is the file's directory, against which a
    vina `receptor:` path is read; without it (an upload) only an inline receptor is accepted.
    trusted: check program inputs under a trusted campaign's rules (input_policy); the caller
    has checked with campaign_trust_check that its user may, and campaign_import checks again.
    """
    places = _Places(source)
    top = places.mapping("top level", _load_yaml(text, source), TOP_KEYS,
                         required=("campaign", "campaign_config"))
    name = places.check("campaign", schema.check_name, top["campaign"], "campaign name")
    dataset = top.get("dataset")
    if dataset is not None:
        places.check("dataset", schema.check_name, dataset, "dataset name")
    notes = top.get("notes", "")
    if not isinstance(notes, str):
        raise DefinitionError(f"{source}: notes: {notes!r} is not text")

    config = places.mapping("campaign_config", top["campaign_config"], CONFIG_KEYS,
                            required=("func_name", "args", "kwargs"))
    function = places.check("campaign_config.func_name", schema.check_task_name, config["func_name"])
    job_timeout = places.check("campaign_config.job_timeout", schema.check_whole_number,
                               config.get("job_timeout", schema.DEFAULT_JOB_TIMEOUT),
                               "job timeout (s)", 1)
    max_attempts = places.check("campaign_config.max_attempts", schema.check_whole_number,
                                config.get("max_attempts", schema.DEFAULT_MAX_ATTEMPTS),
                                "max attempts", 1)
    arg_sets = _parse_arg_sets(places, config["args"], function, base_dir, trusted)
    kwargs = places.mapping("campaign_config.kwargs", config["kwargs"], KWARGS_KEYS,
                            required=KWARGS_KEYS)
    output_key = places.check("campaign_config.kwargs.mongo_output_key", schema.check_name,
                              kwargs["mongo_output_key"], "output key")

    submit = places.mapping("submit", top.get("submit", {}), SUBMIT_KEYS)
    query = places.check("submit.query", schema.check_query, submit.get("query", {}))
    projection = places.check("submit.projection", schema.check_projection,
                              submit.get("projection", []))
    queue, priority = places.check("submit.queue", schema.parse_queue,
                                   submit.get("queue", schema.DEFAULT_QUEUE))
    return CampaignDefinition(
        source=source, name=name, dataset=dataset, notes=notes, function=function,
        job_timeout=job_timeout, max_attempts=max_attempts, output_key=output_key,
        arg_sets=arg_sets, query=query, projection=projection, queue=queue, priority=priority,
        trusted=trusted,
    )


def _parse_arg_sets(places: _Places, args: Any, function: str, base_dir: Optional[Path],
                    trusted: bool) -> Tuple[ArgSetDefinition, ...]:
    if not isinstance(args, list) or not args:
        raise DefinitionError(f"{places.source}: campaign_config.args: expected a list of one or "
                              f"more arg sets, got {args!r}")
    allowed = ARG_SET_KEYS + tuple(schema.parameter_keys(function))
    seen: Dict[str, str] = {}
    arg_sets = []
    for index, item in enumerate(args):
        place = f"campaign_config.args[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            place = f"{place} ({item['name']})"
        item = places.mapping(place, item, allowed)
        name = places.check(place, schema.check_name, item.get("name"), "arg set name")
        if name in seen:
            raise DefinitionError(f"{places.source}: {place}: arg set name {name!r} is used twice "
                                  f"(also {seen[name]})")
        seen[name] = place
        parameters = {k: v for k, v in item.items() if k not in ARG_SET_KEYS}
        arg_sets.append(ArgSetDefinition(
            name=name,
            parameters=places.check(place, _arg_set_parameters, function, parameters, base_dir,
                                    trusted),
            parsers=places.check(place, schema.check_parsers, item.get("parsers", {})),
            keep_files=places.check(place, schema.check_keep_files, item.get("keep_files", {})),
        ))
    return tuple(arg_sets)


def _arg_set_parameters(function: str, parameters: Dict[str, Any], base_dir: Optional[Path],
                        trusted: bool) -> Dict[str, Any]:
    return schema.check_parameters(function, parameters, base_dir, trusted=trusted)


def campaign_import(*, definition: CampaignDefinition, dataset_name: Optional[str] = None,
                    replace: bool = False, owner=None, user=None) -> Campaign:
    """Create the campaign of `definition`, or replace a same-named draft/done/failed/cancelled one
    (its ledger of tasks goes with its old arg sets).

    dataset_name overrides the definition's dataset. Either everything is written or nothing.
    A replaced campaign keeps its id and owner (unless `owner` is given) and returns to draft.
    The campaign is trusted exactly when the definition was parsed trusted: `user` (who
    imports; default `owner`; both None for a manage.py command) must then pass
    campaign_trust_check, and a replaced trusted campaign imported without trust is no longer
    trusted.
    """
    source = definition.source
    try:
        input_policy.campaign_trust_check(user=user if user is not None else owner,
                                          trusted=definition.trusted)
    except input_policy.TrustError as exc:
        raise input_policy.TrustError(f"{source}: campaign: {exc}") from None
    dataset_name = dataset_name or definition.dataset
    if not dataset_name:
        raise DefinitionError(f"{source}: no dataset given: name one in the file (dataset: NAME) "
                              f"or when importing (--dataset NAME)")
    with transaction.atomic(using=router.db_for_write(Campaign)):
        dataset = Dataset.objects.filter(name=dataset_name).first()
        if dataset is None:
            raise DefinitionError(f"{source}: dataset: no dataset named {dataset_name!r} "
                                  f"(known: {', '.join(dataset_names(limit=20)) or 'none'})")
        campaign = Campaign.objects.select_for_update().filter(name=definition.name).first()
        if campaign is not None:
            _check_replaceable(campaign, source=source, replace=replace)
            # New arg sets: new job ids and a new spec key, so nothing of the old ones is
            # taken for the new; the old ledger described the old arg sets, so it goes too
            # (the records keep the results it produced).
            campaign.spec_version += 1
            campaign.tasks.all().delete()
            campaign.task_minutes.all().delete()  # its per-minute series goes with it
        else:
            campaign = Campaign(name=definition.name)
        _fill_campaign(campaign, definition=definition, dataset=dataset)
        if owner is not None:
            campaign.owner = owner
        campaign.save()
        campaign.arg_sets.all().delete()
        ArgSet.objects.bulk_create(
            ArgSet(campaign=campaign, position=position, name=arg_set.name,
                   parameters=arg_set.parameters, parsers=arg_set.parsers,
                   keep_files=arg_set.keep_files)
            for position, arg_set in enumerate(definition.arg_sets)
        )
    return campaign


def _check_replaceable(campaign: Campaign, *, source: str, replace: bool) -> None:
    if not replace:
        raise DefinitionError(f"{source}: campaign: a campaign named {campaign.name!r} already "
                              f"exists; import with replace (--replace) to overwrite it")
    if campaign.state not in REPLACEABLE_STATES:
        raise DefinitionError(
            f"{source}: campaign: campaign {campaign.name!r} is {campaign.state}; only a "
            f"campaign in {', '.join(REPLACEABLE_STATES)} can be replaced (pause is not enough)"
        )


def _fill_campaign(campaign: Campaign, *, definition: CampaignDefinition, dataset: Dataset) -> None:
    campaign.dataset = dataset
    campaign.notes = definition.notes
    campaign.function = definition.function
    campaign.job_timeout = definition.job_timeout
    campaign.max_attempts = definition.max_attempts
    campaign.output_key = definition.output_key
    campaign.query = definition.query
    campaign.projection = definition.projection
    campaign.queue = definition.queue
    campaign.priority = definition.priority
    campaign.trusted = definition.trusted
    campaign.state = Campaign.State.DRAFT


# --- export ----------------------------------------------------------------------------------

_TRAILING_SPACES = re.compile(r" +\n")


class _Dumper(yaml.SafeDumper):
    """Indents lists under their key and writes multi-line text as a literal block, as people do."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def analyze_scalar(self, scalar: str) -> yaml.emitter.ScalarAnalysis:
        analysis = super().analyze_scalar(scalar)
        # PyYAML refuses a literal block when a line ends in spaces, though a block keeps them;
        # receptor files (PDBQT) are full of such lines and would come out as one quoted line.
        if not analysis.allow_block and "\n" in scalar:
            without = super().analyze_scalar(_TRAILING_SPACES.sub("\n", scalar))
            analysis.allow_block = without.allow_block
        return analysis


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_list(dumper: yaml.SafeDumper, value: list) -> yaml.SequenceNode:
    # Coordinates read best on one line ("center: [11, 90.5, 57.5]"), names one per line.
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=numbers or None)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)


def campaign_export(*, campaign: Campaign) -> str:
    """The campaign as a job definition file that campaign_definition_parse reads back."""
    document: Dict[str, Any] = {"campaign": campaign.name, "dataset": campaign.dataset.name}
    if campaign.notes:
        document["notes"] = campaign.notes
    document["campaign_config"] = {
        "func_name": campaign.function,
        "job_timeout": campaign.job_timeout,
        "max_attempts": campaign.max_attempts,
        "args": [_export_arg_set(arg_set, campaign.function)
                 for arg_set in campaign_arg_sets(campaign=campaign)],
        "kwargs": {"mongo_output_key": campaign.output_key},
    }
    document["submit"] = {
        "query": campaign.query,
        "projection": campaign.projection,
        "queue": campaign.queue_spec,
    }
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=1000)


def _export_arg_set(arg_set: ArgSet, function: str) -> Dict[str, Any]:
    item: Dict[str, Any] = {"name": arg_set.name}
    # Schema order, not the stored order: PostgreSQL's jsonb does not keep key order.
    item.update((key, arg_set.parameters[key]) for key in schema.parameter_keys(function)
                if key in arg_set.parameters)
    if arg_set.parsers:
        item["parsers"] = arg_set.parsers
    if arg_set.keep_files:
        item["keep_files"] = arg_set.keep_files
    return item
