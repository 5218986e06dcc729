"""The campaign spec: what every task of a campaign shares, written once to Redis per version.

Jobs then carry only their record and the spec's key (docs/runtime.md, "Jobs on Redis"), so a
Vina receptor or a long ORCA route is stored once, not once per molecule.
"""
from __future__ import annotations

import json

from redis import Redis

from campaigns.models import Campaign
from campaigns.pipeline_keys import campaign_spec_key
from campaigns.selectors import campaign_arg_sets
from workers.runtime.config import DEFAULT_KEEP_FILE_CAP


def campaign_spec(*, campaign: Campaign) -> dict:
    """The spec of docs/runtime.md: function, job_timeout, keep_file_cap and the arg sets."""
    return {
        "function": campaign.function,
        "job_timeout": campaign.job_timeout,
        "keep_file_cap": DEFAULT_KEEP_FILE_CAP,
        "arg_sets": [
            {"name": arg_set.name, "parameters": arg_set.parameters, "parsers": arg_set.parsers,
             "keep_files": arg_set.keep_files}
            for arg_set in campaign_arg_sets(campaign=campaign)
        ],
    }


def campaign_spec_publish(*, campaign: Campaign, connection: Redis) -> str:
    """SET the campaign's spec at its spec key (no expiry: queued jobs need it); return the key.

    Idempotent: the same campaign version always writes the same spec to the same key.
    """
    key = campaign_spec_key(campaign=campaign)
    connection.set(key, json.dumps(campaign_spec(campaign=campaign), separators=(",", ":")))
    return key
