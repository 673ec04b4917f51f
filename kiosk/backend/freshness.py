"""What is odd about a verified event: one rule set for every consumer.

A verified event is genuine (the device signed it), but it may still be a
replay of an old one whose id a consumer no longer remembers, or come from a
device whose clock is wrong. :func:`flags_for` names what is odd; consumers
keep the event and its flags (the reference consumer prints them, the
ingest stores them), they never drop a genuine event for them:

- ``seq_backwards``: the sequence number is lower than the highest already
  seen from that door (by more than ``reorder_window``): a replay of an
  event forgotten since, or a device whose database was reset;
- ``clock_ahead``: the event's time is later than its receive time by more
  than ``max_clock_ahead_s``: the device's clock is wrong;
- ``late``: the event's time is earlier than its receive time by more than
  ``stale_after_s``: it waited long on the device (offline), or it is a replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Every flag :func:`flags_for` may set.
FLAGS = ("seq_backwards", "clock_ahead", "late")


@dataclass(frozen=True)
class FreshnessRules:
    """Limits of :func:`flags_for` (the ingest takes them from ``[ingest]``)."""

    max_clock_ahead_s: float = 300.0
    stale_after_s: float = 86400.0
    #: How far a door's sequence may go back without a flag: 0 for one
    #: consumer; several in a ``$share`` group store one door's events out of order.
    reorder_window: int = 0


def flags_for(claims: dict[str, Any], received_at: float, last_seq: int | None,
              rules: FreshnessRules = FreshnessRules()) -> tuple[str, ...]:
    """The flags of one verified event, given the highest sequence number seen from its door."""
    flags = []
    if last_seq is not None and claims["seq"] < last_seq - rules.reorder_window:
        flags.append("seq_backwards")
    skew = float(claims["time"]) - received_at
    if skew > rules.max_clock_ahead_s:
        flags.append("clock_ahead")
    elif -skew > rules.stale_after_s:
        flags.append("late")
    return tuple(flags)
