"""Numbers as the dashboard shows them: progress-bar segments, rates, ETAs, sizes.

Plain functions, so the templates need no tag library and the tests can pin the text.
"""
from __future__ import annotations

from dataclasses import dataclass

from campaigns.progress import format_duration
from campaigns.status import CampaignStatus

# The bar's stacked segments, left to right; pending and cancelled tasks are the empty rest.
SEGMENTS = ("done", "failed", "running", "queued")
ENDED = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Segment:
    state: str
    count: int
    width: str  # a CSS percentage, "12.345%"

    @property
    def label(self) -> str:
        return f"{self.state} {self.count:,}"

    @property
    def count_text(self) -> str:
        return f"{self.count:,}"


@dataclass(frozen=True)
class Progress:
    total: int
    ended: int
    percent: int  # whole percent of tasks that ended (done, failed or cancelled), floored
    segments: list[Segment]  # the bar's
    keys: list[Segment]      # the legend's: the bar's, then any other state that has tasks
    states: list[Segment]    # every state, in the ledger's order
    rate: str
    eta: str
    badge: str = ""       # the state badge's CSS kind (CampaignStatus.badge)
    state_text: str = ""  # its text (CampaignStatus.state_text)

    @property
    def total_text(self) -> str:
        return f"{self.total:,}"


def progress(status: CampaignStatus) -> Progress:
    """The progress bar and its text for one campaign's status."""
    total = status.total
    ended = sum(status.counts[state] for state in ENDED)
    every = {state: Segment(state, count, f"{100 * count / total:.3f}%" if total else "0%")
             for state, count in status.counts.items()}
    segments = [every[state] for state in SEGMENTS]
    keys = [*segments, *(segment for state, segment in every.items()
                         if state not in SEGMENTS and segment.count)]
    # Floored, so that 999,999 of 1,000,000 reads 99 %, never a premature 100 %.
    percent = 100 * ended // total if total else 0
    return Progress(total=total, ended=ended, percent=percent, segments=segments,
                    keys=keys, states=list(every.values()),
                    rate=rate_text(status.rate_10m or status.rate_1m), eta=eta_text(status),
                    badge=status.badge, state_text=status.state_text)


def rate_text(per_second: float) -> str:
    """"12.5/s" when fast, "40/min" when slower, "-" when nothing finished lately."""
    if per_second <= 0:
        return "-"
    if per_second >= 1:
        return f"{per_second:,.1f}/s"
    return f"{per_second * 60:,.1f}/min"


def eta_text(status: CampaignStatus) -> str:
    if status.remaining == 0:
        return "finished" if status.total else "no tasks"
    if status.eta_s is None:
        return "unknown (nothing finished in the last 10 minutes)"
    return format_duration(status.eta_s)


def bytes_text(size: int | None) -> str:
    if size is None:
        return "unknown"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} B"
