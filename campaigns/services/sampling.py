"""Sampling into a dataset: frames of an MD result become new records of a target dataset.

An arg set of an `xtb.md` campaign may say where its frames go:

    parameters: {..., sample: {into: demo-md, every: 5, max_per_record: 20,
                               energy_window_ev: 0.5, rmsd_min: 0.1}}

When the collector writes such a result, the selected frames are inserted into dataset `into`
(created for the campaign's owner if missing) as records with their provenance, so the next
campaign (a DFT single point, say) selects them with an ordinary query such as
`{"input.provenance.campaign": "md_demo"}`. This is the sampling step of ANI-1x-style
active learning (docs/sampling.md).

Selection, in this order: frame 0 (the start geometry, which the parent record already is) is
never taken; then every `every`-th frame; then frames more than `energy_window_ev` above the
lowest energy of the trajectory are dropped; then a frame within `rmsd_min` Å (after optimal
superposition, Kabsch) of a frame already taken is dropped; then, of what is left, at most
`max_per_record` evenly spaced frames. A new record's id is `<parent>.<campaign>.<arg
set>.f<frame>`, so collecting the same result again inserts nothing twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from django.db.models import F

from campaigns.errors import ApplicationError, DefinitionError
from campaigns.models import Campaign, Dataset
from campaigns.stores import ResultUpdate, store_for

log = logging.getLogger(__name__)

HARTREE_EV = 27.211386245988
SAMPLING_FUNCTIONS = frozenset({"xtb.md"})  # the task functions whose results hold frames
SAMPLE_KEYS = ("into", "every", "max_per_record", "energy_window_ev", "rmsd_min")


@dataclass(frozen=True)
class SampleRule:
    into: str
    every: int = 1
    max_per_record: Optional[int] = None
    energy_window_ev: Optional[float] = None
    rmsd_min: Optional[float] = None


def check_sample(value: Any, base_dir=None) -> dict:
    """The arg set's `sample` parameter, checked (definition_schema calls this)."""
    if not isinstance(value, dict) or not isinstance(value.get("into"), str) or not value["into"]:
        raise DefinitionError("sample must be a mapping with 'into': a dataset name")
    unknown = sorted(set(value) - set(SAMPLE_KEYS))
    if unknown:
        raise DefinitionError(f"sample: unknown key {unknown[0]!r} (allowed: "
                              f"{', '.join(SAMPLE_KEYS)})")
    for key, minimum in (("every", 1), ("max_per_record", 1)):
        if key in value and (isinstance(value[key], bool) or not isinstance(value[key], int)
                             or value[key] < minimum):
            raise DefinitionError(f"sample: {key} must be a whole number of at least {minimum}")
    for key in ("energy_window_ev", "rmsd_min"):
        if key in value and (isinstance(value[key], bool)
                             or not isinstance(value[key], (int, float))
                             or not 0 <= value[key] < 1e6):
            raise DefinitionError(f"sample: {key} must be a number of at least 0")
    return value


def sample_rules(*, campaign: Campaign) -> Dict[str, SampleRule]:
    """{arg set name: its rule} for the campaign's arg sets that sample."""
    rules = {}
    for name, parameters in campaign.arg_sets.values_list("name", "parameters"):
        sample = (parameters or {}).get("sample")
        if isinstance(sample, dict) and sample.get("into"):
            rules[name] = SampleRule(**{k: sample[k] for k in SAMPLE_KEYS if k in sample})
    return rules


def samples_insert(*, campaign: Campaign, updates: Sequence[ResultUpdate],
                   rules: Optional[Dict[str, SampleRule]] = None) -> int:
    """Insert the selected frames of these results as records; return how many were added."""
    rules = sample_rules(campaign=campaign) if rules is None else rules
    if not rules:
        return 0
    by_target: Dict[str, List[dict]] = {}
    parents = store_for(campaign.dataset).inputs(
        ids=sorted({u.record_id for u in updates if u.arg_set in rules}))
    for update in updates:
        rule = rules.get(update.arg_set)
        if rule is None or update.record_id not in parents:
            continue
        by_target.setdefault(rule.into, []).extend(
            _records(campaign, update, parents[update.record_id], rule))
    added = 0
    for name, records in by_target.items():
        dataset = _target(campaign, name)
        if dataset is None:
            continue
        store = store_for(dataset)
        count = store.insert(records=records)
        if count:
            # Counted up, not recounted: a dataset of millions of samples costs no COUNT(*).
            Dataset.objects.filter(pk=dataset.pk).update(record_count=F("record_count") + count)
            log.info("campaign %s: %d sampled frames into dataset %s", campaign.name, count,
                     name)
        added += count
    return added


def frames_select(*, energies: Sequence[float], frames: Sequence[Sequence[Sequence[float]]],
                  rule: SampleRule) -> List[int]:
    """The indices of the frames the rule keeps (see the module's docstring)."""
    chosen = [i for i in range(1, len(frames)) if i % rule.every == 0]
    if rule.energy_window_ev is not None and energies:
        lowest = min(energies)
        chosen = [i for i in chosen
                  if (energies[i] - lowest) * HARTREE_EV <= rule.energy_window_ev]
    if rule.rmsd_min:
        kept: List[int] = []
        for i in chosen:
            if all(kabsch_rmsd(frames[i], frames[j]) >= rule.rmsd_min for j in kept):
                kept.append(i)
        chosen = kept
    if rule.max_per_record is not None and len(chosen) > rule.max_per_record:
        step = len(chosen) / rule.max_per_record
        chosen = [chosen[int(k * step)] for k in range(rule.max_per_record)]
    return chosen


def kabsch_rmsd(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """RMSD (Å) of two geometries of the same atoms after the best rotation and translation."""
    p, q = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    p, q = p - p.mean(axis=0), q - q.mean(axis=0)
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(((p @ rotation - q) ** 2).sum(axis=1).mean()))


def _records(campaign: Campaign, update: ResultUpdate, parent: dict,
             rule: SampleRule) -> List[dict]:
    values = update.value if isinstance(update.value, dict) else {}
    energies = _value(values, "frame_energies")
    frames = _value(values, "frame_coordinates")
    elements = _value(values, "elements") or parent.get("elements")
    if not (isinstance(energies, list) and isinstance(frames, list)
            and len(energies) == len(frames) and isinstance(elements, list)):
        return []
    computed = values.get("computed") if isinstance(values.get("computed"), dict) else {}
    charge = computed.get("charge", parent.get("charge", 0))
    multiplicity = computed.get("multiplicity", parent.get("multiplicity", 1))
    records = []
    for index in frames_select(energies=energies, frames=frames, rule=rule):
        records.append({
            "id": f"{update.record_id}.{campaign.name}.{update.arg_set}.f{index:05d}",
            "input": {"elements": elements, "coordinates": frames[index], "charge": charge,
                      "multiplicity": multiplicity,
                      "provenance": {"parent": update.record_id,
                                     "dataset": campaign.dataset.name,
                                     "campaign": campaign.name, "arg_set": update.arg_set,
                                     "frame": index, "energy_Eh": energies[index],
                                     "sampling": computed.get("sampling", {})}}})
    return records


def _value(values: dict, name: str) -> Any:
    item = values.get(name)
    return item.get("value") if isinstance(item, dict) else None


def _target(campaign: Campaign, name: str) -> Optional[Dataset]:
    """The dataset `name`, created for the campaign's owner if missing; None (and an error in
    the log) when it belongs to somebody else: a campaign never writes into another's data."""
    dataset, created = Dataset.objects.get_or_create(
        name=name, defaults={"owner": campaign.owner,
                             "description": f"frames sampled by campaign {campaign.name}"})
    if created:
        log.info("campaign %s: created dataset %s for its samples", campaign.name, name)
    elif dataset.owner_id not in (None, campaign.owner_id):
        log.error("campaign %s: dataset %s belongs to another user; samples not inserted",
                  campaign.name, name)
        return None
    return dataset


def frames_resample(*, campaign: Campaign, batch_size: int = 200) -> tuple[int, int]:
    """samples_insert over the campaign's stored results, a batch at a time; (added, results)."""
    rules = sample_rules(campaign=campaign)
    if not rules:
        raise ApplicationError(f"campaign {campaign.name} has no arg set with a 'sample' rule")
    store = store_for(campaign.dataset)
    added = results = 0
    for arg_set in rules:
        path = f"{campaign.output_key}.{arg_set}"
        cursor = None
        while True:
            query = {path: {"$ne": None}, **({"id": {"$gt": cursor}} if cursor else {})}
            batch = store.select(query=query, limit=batch_size)
            updates = [ResultUpdate(r["id"], campaign.output_key, arg_set,
                                    r["results"][campaign.output_key][arg_set]) for r in batch]
            added += samples_insert(campaign=campaign, updates=updates, rules=rules)
            results += len(updates)
            if len(batch) < batch_size:
                break
            cursor = batch[-1]["id"]
    return added, results
